// Hands each pod its own loopback address <prefix>.<x>.<y>, as a CNI plugin hands out pod IPs.
export const podIpsMax = 250 * 254;

export class PodIpPool {
  private readonly prefix: string;
  private readonly byOwner = new Map<string, string>();
  private readonly taken = new Set<string>();
  private next = 0;

  constructor(prefix: string) {
    if (!/^127\.\d{1,3}$/.test(prefix)) throw new Error(`BFT_ERR_POD_IP_PREFIX: ${prefix} is not 127.<n>`);
    this.prefix = prefix;
  }

  /** The same owner (pod uid) always gets the same address until it releases it. */
  allocate(owner: string): string {
    const existing = this.byOwner.get(owner);
    if (existing) return existing;
    for (let tried = 0; tried < podIpsMax; tried += 1) {
      const index = this.next;
      this.next = (this.next + 1) % podIpsMax;
      // Skips .0 and .255 in the last octet and starts at x = 1 so no pod gets a network-looking address.
      const ip = `${this.prefix}.${1 + Math.floor(index / 254)}.${1 + (index % 254)}`;
      if (!this.taken.has(ip)) {
        this.taken.add(ip);
        this.byOwner.set(owner, ip);
        return ip;
      }
    }
    throw new Error(`BFT_ERR_POD_IPS_EXHAUSTED: all ${podIpsMax} addresses under ${this.prefix} are in use`);
  }

  /** Marks an address found in use (a pod that survived an agent restart). */
  claim(owner: string, ip: string): void {
    this.byOwner.set(owner, ip);
    this.taken.add(ip);
  }

  release(owner: string): void {
    const ip = this.byOwner.get(owner);
    if (!ip) return;
    this.byOwner.delete(owner);
    this.taken.delete(ip);
  }
}
