import { describe, expect, it } from 'vitest';
describe('scaffold', () => { it('runs on node 24', () => { expect(process.versions.node.split('.')[0]).toBe('24'); }); });
