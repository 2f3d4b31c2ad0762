import { describe, expect, it } from 'vitest';
import { encodeMessage } from '../protocol/codec.ts';
import { MessageType } from '../protocol/messages.ts';
import { ClientMux } from './mux.ts';
import type { ClientTransport } from './transport.ts';

function fakeShared() {
  let handler: (replicaId: number, payload: Uint8Array) => void = () => {};
  const sent: Array<[number, Uint8Array]> = [];
  const transport: ClientTransport = {
    send: (replicaId, payload) => void sent.push([replicaId, payload]),
    onMessage: (h) => {
      handler = h;
    },
    close: async () => {},
  };
  return { transport, sent, deliver: (replicaId: number, payload: Uint8Array) => handler(replicaId, payload) };
}

const reply = (clientId: string, seq: number) =>
  encodeMessage({ type: MessageType.REPLY, view: 0, clientId, seq, result: new Uint8Array([seq]) });

describe('client mux', () => {
  it('routes each reply to the session it names, and counts what no session claims', () => {
    const shared = fakeShared();
    const mux = new ClientMux(shared.transport);
    const got: string[] = [];
    mux.session('bench/1').onMessage((r) => got.push(`1 from ${r}`));
    mux.session('bench/2').onMessage((r) => got.push(`2 from ${r}`));
    shared.deliver(0, reply('bench/2', 1));
    shared.deliver(3, reply('bench/1', 1));
    shared.deliver(1, reply('bench/9', 1));
    shared.deliver(1, new Uint8Array([0xc1]));
    expect(got).toEqual(['2 from 0', '1 from 3']);
    expect(mux.unroutedMessages).toBe(2);
  });

  it('sends through the shared links and detaches a closed session', async () => {
    const shared = fakeShared();
    const mux = new ClientMux(shared.transport);
    const session = mux.session('bench/1');
    let got = 0;
    session.onMessage(() => got++);
    session.send(2, new Uint8Array([1]));
    expect(shared.sent.map(([r]) => r)).toEqual([2]);
    await session.close();
    shared.deliver(0, reply('bench/1', 1));
    expect(got).toBe(0);
  });
});
