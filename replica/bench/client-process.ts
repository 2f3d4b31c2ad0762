// The benchmark's client process, after BFT-SMaRt's ThroughputLatencyClient: many logical clients, each
// with one ordered request outstanding, over one shared set of TLS links. Prints one JSON line.

import { parseArgs } from 'node:util';
import { BftClient } from '../src/client/client.ts';
import { ClientMux } from '../src/client/mux.ts';
import type { ReplicaEndpoint } from '../src/client/transport.ts';
import type { View } from '../src/core/view.ts';
import { readTlsMaterial } from '../src/crypto/certificates.ts';
import { TlsClientTransport } from '../src/transport/tls-transport.ts';
import { Signer } from '../src/crypto/ed25519.ts';
import { loadSigningKeys } from '../src/server/keys.ts';

const { values } = parseArgs({
  options: {
    keys: { type: 'string' },
    identity: { type: 'string', default: 'bench' },
    view: { type: 'string' },
    endpoints: { type: 'string' },
    clients: { type: 'string', default: '50' },
    'request-bytes': { type: 'string', default: '0' },
    'warmup-seconds': { type: 'string', default: '5' },
    seconds: { type: 'string', default: '30' },
    signed: { type: 'boolean', default: false },
  },
});
const view = JSON.parse(values.view ?? '') as View;
const endpoints = JSON.parse(values.endpoints ?? '') as ReplicaEndpoint[];
const clientCount = Number(values.clients);
const operation = new Uint8Array(Number(values['request-bytes']));
const warmupMs = Number(values['warmup-seconds']) * 1000;
const measureMs = Number(values.seconds) * 1000;

// With --signed every request carries the client's Ed25519 signature, which every replica verifies.
const signer = values.signed ? new Signer((await loadSigningKeys(values.keys ?? '', `client-${values.identity}`)).privateKeyPem) : undefined;
const transport = new TlsClientTransport({ tls: await readTlsMaterial(values.keys ?? '', `client-${values.identity}`), replicas: endpoints });
const mux = new ClientMux(transport);
const session = `${process.pid}-${Date.now().toString(36)}`;
const clients = Array.from(
  { length: clientCount },
  (_, i) =>
    new BftClient({
      clientId: `${values.identity}/${session}-${i}`,
      view,
      transport: mux.session(`${values.identity}/${session}-${i}`),
      ...(signer ? { signer } : {}),
    }),
);

const started = performance.now();
const measureFrom = started + warmupMs;
const measureUntil = measureFrom + measureMs;
const latenciesUs: number[] = [];
let completed = 0;
let failures = 0;

async function run(client: BftClient): Promise<void> {
  for (;;) {
    const sent = performance.now();
    if (sent >= measureUntil) return;
    try {
      await client.invokeOrdered(operation);
    } catch {
      failures++;
      continue;
    }
    const done = performance.now();
    if (sent >= measureFrom && done <= measureUntil) {
      latenciesUs.push(Math.round((done - sent) * 1000));
      completed++;
    }
  }
}

await Promise.all(clients.map(run));
latenciesUs.sort((a, b) => a - b);
const percentile = (p: number) => (latenciesUs.length === 0 ? null : (latenciesUs[Math.min(latenciesUs.length - 1, Math.floor(p * latenciesUs.length))] as number) / 1000);
process.stdout.write(
  `${JSON.stringify({
    completed,
    failures,
    opsPerSecond: Math.round(completed / (measureMs / 1000)),
    latencyMs: { p50: percentile(0.5), p90: percentile(0.9), p99: percentile(0.99), max: percentile(1) },
  })}\n`,
);
await Promise.all(clients.map((c) => c.close()));
await mux.close();
process.exit(0);
