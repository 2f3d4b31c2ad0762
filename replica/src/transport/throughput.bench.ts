// Measures 100-byte frames per second over one TLS connection between two transports in one process.
// Run: /work/main/node_modules/.bin/node replica/src/transport/throughput.bench.ts [seconds]
// Prints JSON; asserts nothing (timing goals belong to benchmarks, not tests).

import { makeTestCluster, credentialsOf, endpoints, randomPort } from './test-support.ts';
import { TlsReplicaTransport } from './tls-transport.ts';

const seconds = Number(process.argv[2] ?? 5);
const frameBytes = 100;
const burstFrames = 2_000;
// Frames sent but not yet received: enough to keep the pipe full, far below the link's queue bound.
const inFlightFramesMax = 100_000;

const cluster = await makeTestCluster(2);
const port = randomPort();
let received = 0;
const transports = [0, 1].map(
  (id) =>
    new TlsReplicaTransport({
      me: id,
      listenHost: cluster.address(id + 1),
      listenPort: port,
      tls: credentialsOf(cluster, id),
      replicas: endpoints(cluster, port),
      onFrame: () => {
        received += 1;
      },
    }),
);
const [sender] = transports as [TlsReplicaTransport];
await Promise.all(transports.map((transport) => transport.start()));
const payload = new Uint8Array(frameBytes).fill(7);
sender.sendToReplica(1, payload);
while (received < 1) await new Promise((resolve) => setTimeout(resolve, 5));

const startedMs = performance.now();
const cpuBefore = process.cpuUsage();
let sent = 1;
const receivedAtStart = received;
while (performance.now() - startedMs < seconds * 1000) {
  if (sent - received < inFlightFramesMax) {
    for (let i = 0; i < burstFrames; i++) sender.sendToReplica(1, payload);
    sent += burstFrames;
  }
  await new Promise((resolve) => setImmediate(resolve));
}
const elapsedSeconds = (performance.now() - startedMs) / 1000;
const cpu = process.cpuUsage(cpuBefore);
const stats = sender.stats();
process.stdout.write(
  `${JSON.stringify(
    {
      frameBytes,
      seconds: Number(elapsedSeconds.toFixed(2)),
      framesPerSecond: Math.round((received - receivedAtStart) / elapsedSeconds),
      megabytesPerSecond: Number((((received - receivedAtStart) * (frameBytes + 4)) / elapsedSeconds / 1e6).toFixed(1)),
      senderSocketWrites: stats.socketWrites,
      framesPerSocketWrite: Math.round(stats.framesOut / stats.socketWrites),
      dropped: stats.drops.queue_full,
      cpuSecondsPerSecond: Number(((cpu.user + cpu.system) / 1e6 / elapsedSeconds).toFixed(2)),
    },
    null,
    2,
  )}\n`,
);
await Promise.all(transports.map((transport) => transport.stop()));
