import { describe, expect, it } from 'vitest';
import { PodIpPool } from './ip-pool.ts';

describe('pod IP pool', () => {
  it('gives distinct pods distinct loopback addresses and the same pod the same one', () => {
    const pool = new PodIpPool('127.21');
    const first = pool.allocate('pod-a');
    const second = pool.allocate('pod-b');
    expect(first).toBe('127.21.1.1');
    expect(second).toBe('127.21.1.2');
    expect(pool.allocate('pod-a')).toBe(first);
  });

  it('never hands out .0 or .255 in the last octet', () => {
    const pool = new PodIpPool('127.21');
    const addresses = Array.from({ length: 600 }, (_, index) => pool.allocate(`pod-${index}`));
    expect(new Set(addresses).size).toBe(600);
    expect(addresses.some((ip) => ip.endsWith('.0') || ip.endsWith('.255'))).toBe(false);
  });

  it('reuses an address only after its pod released it', () => {
    const pool = new PodIpPool('127.21');
    const first = pool.allocate('pod-a');
    pool.release('pod-a');
    const others = Array.from({ length: 5 }, (_, index) => pool.allocate(`pod-${index}`));
    expect(others).not.toContain(undefined);
    expect(new Set([first, ...others]).size).toBe(6);
  });

  it('refuses a prefix outside the loopback range', () => {
    expect(() => new PodIpPool('10.0')).toThrow(/BFT_ERR_POD_IP_PREFIX/);
  });
});
