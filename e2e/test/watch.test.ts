import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runListWatch } from '../src/node-agent/kube-rest.ts';
import { eventually, freshNamespace, kubectl, kubeRest } from './kube.ts';

const quietMs = 70_000;

describe('the node agent\'s list-watch loop', () => {
  let namespace = '';
  beforeAll(async () => { namespace = await freshNamespace('watch'); });
  afterAll(async () => { await kubectl(['delete', 'namespace', namespace, '--wait=false']); });

  // client-node's Watch ends a stream after 30 s without data; the loop must carry on past that.
  it('still delivers an event after more than a minute of quiet', { timeout: quietMs + 60_000 }, async () => {
    const seen: string[] = [];
    const errors: unknown[] = [];
    const abort = new AbortController();
    const loop = runListWatch(kubeRest(), `/api/v1/namespaces/${namespace}/configmaps`, {}, {
      onList: () => undefined,
      onEvent: (type, object) => { if (type === 'ADDED') seen.push(String(object.metadata.name)); },
      onError: (error) => errors.push(error),
    }, abort.signal);
    try {
      await kubectl(['-n', namespace, 'create', 'configmap', 'before']);
      await eventually('first event', 10_000, async () => seen.includes('before'));
      await new Promise((resolve) => setTimeout(resolve, quietMs));
      await kubectl(['-n', namespace, 'create', 'configmap', 'after']);
      await eventually('event after the quiet minute', 10_000, async () => seen.includes('after'));
      expect(errors).toEqual([]);
    } finally {
      abort.abort();
      await loop;
    }
  });
});
