import { describe, expect, it } from 'vitest';
import { killAfterWritesFrom, killingAfterWrites } from './fault-injection.ts';

const fakeRest = () => ({
  get: async (path: string) => ({ path }),
  post: async (path: string, _body: unknown) => ({ path }),
  put: async (path: string, _body: unknown) => ({ path }),
  delete: async (path: string, _body?: unknown) => ({ path }),
  apply: async (path: string, _object: unknown, _fieldManager: string) => ({ path }),
  mergePatch: async (path: string, _body: unknown) => ({ path }),
});

describe('operator crash injection', () => {
  it('kills after the N-th successful write, after the write returned, and never for reads', async () => {
    const kills: string[] = [];
    let returned = '';
    const rest = killingAfterWrites(fakeRest(), 2, () => kills.push(`after ${returned}`));
    await rest.get('/a');
    await rest.get('/b');
    expect(kills).toEqual([]);
    returned = (await rest.post('/c', {})).path;
    expect(kills).toEqual([]);
    returned = (await rest.apply('/d', {}, 'm')).path;
    // The kill came inside the second write's call, once the apiserver had answered it, before its caller ran on.
    expect(kills).toEqual(['after /c']);
  });

  it('is off unless the variable is set, and refuses a value that is not a positive integer', () => {
    expect(killAfterWritesFrom({})).toBeNull();
    expect(killAfterWritesFrom({ BFTKUBE_OPERATOR_FAULT_KILL_AFTER_WRITES: '3' })).toBe(3);
    expect(() => killAfterWritesFrom({ BFTKUBE_OPERATOR_FAULT_KILL_AFTER_WRITES: '0' })).toThrow(/positive integer/);
    expect(() => killAfterWritesFrom({ BFTKUBE_OPERATOR_FAULT_KILL_AFTER_WRITES: 'x' })).toThrow(/positive integer/);
  });
});
