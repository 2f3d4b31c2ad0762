import { describe, expect, it } from 'vitest';
import { expandReferences, fieldValue } from './downward.ts';

describe('downward API and env references', () => {
  const pod = {
    metadata: { name: 'web-0', namespace: 'shop', uid: 'u-1', labels: { app: 'web', tier: 'front' } },
    spec: { nodeName: 'node-a', serviceAccountName: 'web' },
  };
  const facts = { podIp: '127.21.1.7', hostIp: '127.11.0.1' };

  it('reads the fields a kubelet exposes', () => {
    expect(fieldValue(pod, facts, 'metadata.name')).toBe('web-0');
    expect(fieldValue(pod, facts, 'status.podIP')).toBe('127.21.1.7');
    expect(fieldValue(pod, facts, "metadata.labels['tier']")).toBe('front');
    expect(fieldValue(pod, facts, 'metadata.labels')).toBe('app="web"\ntier="front"');
  });

  it('rejects a field it does not know instead of inventing a value', () => {
    expect(() => fieldValue(pod, facts, 'spec.priority')).toThrow(/BFT_ERR_DOWNWARD_FIELD/);
  });

  it('expands $(VAR) from known variables, keeps unknown ones and unescapes $$', () => {
    const variables = new Map([['POD_IP', '127.21.1.7']]);
    expect(expandReferences('--bind=$(POD_IP):80 $(MISSING) $$(POD_IP)', variables)).toBe('--bind=127.21.1.7:80 $(MISSING) $(POD_IP)');
  });
});
