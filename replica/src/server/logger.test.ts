import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from './logger.ts';

function capture(): { destination: Writable; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return {
    destination,
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

describe('createLogger', () => {
  it('writes one JSON object per line with the replica id, the view, a level name and an ISO time', () => {
    const { destination, lines } = capture();
    const logger = createLogger({ replicaId: 3, viewNumber: 7, destination });
    logger.info({ peers: 3 }, 'started');
    const [line] = lines();
    expect(line).toMatchObject({ level: 'info', replica: 3, view: 7, peers: 3, msg: 'started' });
    expect(new Date(line?.time as string).toISOString()).toBe(line?.time);
    expect(line).not.toHaveProperty('pid');
    expect(line).not.toHaveProperty('hostname');
  });

  it('adds the cid to every line of a child logger, keeping the base fields', () => {
    const { destination, lines } = capture();
    const logger = createLogger({ replicaId: 0, viewNumber: 1, destination });
    const instanceLog = logger.child({ cid: 42 });
    instanceLog.info({ regency: 1 }, 'decided');
    instanceLog.warn('slow');
    expect(lines()).toMatchObject([
      { replica: 0, view: 1, cid: 42, regency: 1, msg: 'decided', level: 'info' },
      { replica: 0, view: 1, cid: 42, msg: 'slow', level: 'warn' },
    ]);
  });

  it('drops lines below its level (info by default)', () => {
    const { destination, lines } = capture();
    const logger = createLogger({ replicaId: 0, viewNumber: 0, destination });
    logger.debug('hidden');
    const verbose = createLogger({ replicaId: 0, viewNumber: 0, level: 'debug', destination });
    verbose.debug('shown');
    expect(lines().map((line) => line.msg)).toEqual(['shown']);
  });

  it('serializes errors with their message, stack and code', () => {
    const { destination, lines } = capture();
    const logger = createLogger({ replicaId: 0, viewNumber: 0, destination });
    const error = Object.assign(new Error('disk full'), { code: 'ENOSPC' });
    logger.error({ err: error }, 'log append failed');
    expect(lines()[0]?.err).toMatchObject({ message: 'disk full', code: 'ENOSPC', type: 'Error' });
  });
});
