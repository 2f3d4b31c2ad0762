// DNS records for headless Services and pod hostnames, served by CoreDNS's hosts plugin.
//
// Why not CoreDNS's kubernetes plugin alone: it reads EndpointSlices, and EndpointSlice validation
// rejects addresses in 127.0.0.0/8 ("may not be in the loopback range"), so the real endpointslice
// controller cannot publish our pods' loopback IPs. The agent computes the same records the
// endpointslice controller + kubernetes plugin would (ready pods selected by a headless Service;
// <hostname>.<subdomain> for pods whose subdomain names the Service) and writes them to a hosts file
// that CoreDNS reloads. Everything else (ClusterIP Services, pod A records, reverse lookups) stays
// with the kubernetes plugin.
import { renameSync, writeFileSync } from 'node:fs';
import type { JsonObject } from './kube-rest.ts';

export const dnsWriteDebounceMs = 100;

function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([key, value]) => labels?.[key] === value);
}

function isReady(pod: JsonObject): boolean {
  return ((pod.status?.conditions ?? []) as JsonObject[]).some((condition) => condition.type === 'Ready' && condition.status === 'True');
}

/** Pure: the hosts-file lines for these Services and pods. */
export function headlessRecords(services: JsonObject[], pods: JsonObject[], clusterDomain: string): string[] {
  const lines: string[] = [];
  for (const service of services) {
    if (service.spec?.clusterIP !== 'None') continue;
    const namespace = String(service.metadata.namespace);
    const name = String(service.metadata.name);
    const publishNotReady = Boolean(service.spec?.publishNotReadyAddresses);
    const serviceName = `${name}.${namespace}.svc.${clusterDomain}`;
    const members = pods
      .filter((pod) => pod.metadata.namespace === namespace && pod.status?.podIP && !pod.metadata.deletionTimestamp)
      .filter((pod) => selects(service.spec?.selector, pod.metadata.labels))
      .filter((pod) => publishNotReady || isReady(pod))
      .sort((a, b) => String(a.metadata.name).localeCompare(String(b.metadata.name)));
    for (const pod of members) {
      const ip = String(pod.status.podIP);
      lines.push(`${ip} ${serviceName}`);
      if (pod.spec?.hostname && pod.spec?.subdomain === name) lines.push(`${ip} ${pod.spec.hostname}.${serviceName}`);
    }
  }
  return lines;
}

export class DnsRecordWriter {
  private readonly file: string;
  private readonly clusterDomain: string;
  private readonly services = new Map<string, JsonObject>();
  private readonly pods = new Map<string, JsonObject>();
  private timer: NodeJS.Timeout | undefined;
  private lastWritten = '';

  constructor(file: string, clusterDomain: string) {
    this.file = file;
    this.clusterDomain = clusterDomain;
  }

  setServices(services: JsonObject[]): void {
    this.services.clear();
    for (const service of services) this.services.set(String(service.metadata.uid), service);
    this.schedule();
  }

  onService(type: string, service: JsonObject): void {
    if (type === 'DELETED') this.services.delete(String(service.metadata.uid));
    else this.services.set(String(service.metadata.uid), service);
    this.schedule();
  }

  setPods(pods: JsonObject[]): void {
    this.pods.clear();
    for (const pod of pods) this.pods.set(String(pod.metadata.uid), pod);
    this.schedule();
  }

  onPod(type: string, pod: JsonObject): void {
    if (type === 'DELETED') this.pods.delete(String(pod.metadata.uid));
    else this.pods.set(String(pod.metadata.uid), pod);
    this.schedule();
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => { this.timer = undefined; this.write(); }, dnsWriteDebounceMs);
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  write(): void {
    const text = headlessRecords([...this.services.values()], [...this.pods.values()], this.clusterDomain).join('\n') + '\n';
    if (text === this.lastWritten) return;
    // CoreDNS may reload at any moment: it must never see a half-written file.
    writeFileSync(`${this.file}.tmp`, text);
    renameSync(`${this.file}.tmp`, this.file);
    this.lastWritten = text;
  }
}
