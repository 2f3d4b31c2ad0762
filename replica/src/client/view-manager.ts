// The View Manager (DESIGN §6): the holder of the key whose signature the replicas require on every
// membership change. It builds and signs a request, submits it through a client like any ordered
// request, reads the replicas' answer, and waits until f+1 members of the new view report it. The
// operator uses this; so does `bftkube view` for local clusters.

import { randomBytes } from 'node:crypto';
import { limits } from '../constants.ts';
import { quorumsFor } from '../core/quorum.ts';
import { Signer } from '../crypto/ed25519.ts';
import { BftError } from '../errors.ts';
import { RequestKind } from '../protocol/messages.ts';
import {
  type Member,
  type Reconfiguration,
  type ReconfigurationOperation,
  type ReconfigurationResult,
  type SignedReconfiguration,
  type ViewDescription,
  decodeReconfigurationResult,
  encodeSignedReconfiguration,
  reconfigurationSigningPayload,
} from '../protocol/reconfiguration.ts';
import type { BftClient } from './client.ts';

/** What a member says its view is; null when it cannot be asked (down, or not a replica). */
export type ViewProbe = (member: Member) => Promise<number | null>;

export interface ViewManagerOptions {
  /** The View Manager's Ed25519 private key (PKCS#8 PEM). */
  readonly privateKeyPem: string;
  /** A client of the cluster (its own session): requests are ordered through it. */
  readonly client: BftClient;
  /** The View Manager's epoch: the operator's leadership term; 0 for a single View Manager. */
  readonly epoch?: number;
  /** How to ask a member for its view number; by default its admin server's /status. */
  readonly probe?: ViewProbe;
}

/** The view number a replica's admin server reports, or null. */
export async function statusViewNumber(member: Member, timeoutMs = 2_000): Promise<number | null> {
  try {
    const response = await fetch(`http://${member.host}:${member.adminPort}/status`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) return null;
    const status = (await response.json()) as { view?: { number?: unknown } };
    return typeof status.view?.number === 'number' ? status.view.number : null;
  } catch {
    return null;
  }
}

export class ViewManager {
  private readonly signer: Signer;
  private readonly client: BftClient;
  private readonly epoch: number;
  private readonly probe: ViewProbe;

  constructor(options: ViewManagerOptions) {
    this.signer = new Signer(options.privateKeyPem);
    this.client = options.client;
    this.epoch = options.epoch ?? 0;
    this.probe = options.probe ?? ((member) => statusViewNumber(member));
  }

  /**
   * A signed request to change view `fromView` by `operations`. A caller that may have to submit the
   * same request again after a crash (the operator) records a nonce first and passes it: Ed25519 is
   * deterministic, so the same request comes out, and the replicas refuse it as stale if it was applied.
   */
  sign(fromView: number, operations: readonly ReconfigurationOperation[], nonce: Uint8Array = new Uint8Array(randomBytes(16))): SignedReconfiguration {
    const reconfiguration: Reconfiguration = { fromView, operations, epoch: this.epoch, nonce };
    return { reconfiguration, signature: this.signer.sign(reconfigurationSigningPayload(reconfiguration)) };
  }

  /**
   * Orders `signed` and returns the replicas' verdict: the new view, or why they refused it (a stale
   * fromView, a reused id, an f the new size cannot tolerate...). The verdict is the one enough replicas
   * agreed on for the client to believe it.
   */
  async submit(signed: SignedReconfiguration): Promise<ReconfigurationResult> {
    const encoded = encodeSignedReconfiguration(signed);
    if (encoded.length > limits.reconfigurationBytesMax) {
      throw new BftError('BFT_ERR_CONFIG_INVALID', `the reconfiguration encodes to ${encoded.length} bytes, more than ${limits.reconfigurationBytesMax}: split it`);
    }
    const answer = await this.client.invokeOrdered(encoded, { kind: RequestKind.RECONFIGURATION });
    const result = decodeReconfigurationResult(answer);
    if (result === null) throw new BftError('BFT_ERR_PROTOCOL', 'the replicas answered a reconfiguration with something that is not a verdict');
    return result;
  }

  /**
   * Resolves once f+1 members of `view` (crash mode: 1) report it or a later one: then a correct replica
   * runs it. Rejects with BFT_ERR_CLIENT_TIMEOUT after `timeoutMs`.
   */
  async waitForView(view: ViewDescription, timeoutMs = 60_000, pollMs = 200): Promise<void> {
    const needed = quorumsFor(view.members.length, view.f, view.mode).includesCorrect;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const numbers = await Promise.all(view.members.map((member) => this.probe(member)));
      if (numbers.filter((number) => number !== null && number >= view.number).length >= needed) return;
      if (Date.now() > deadline) {
        throw new BftError(
          'BFT_ERR_CLIENT_TIMEOUT',
          `fewer than ${needed} members of view ${view.number} report it after ${timeoutMs} ms (they report ${numbers.map((n) => n ?? '-').join(', ')}); check that they run and can reach each other`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
  }

  /** sign → submit → wait for the new view; the refusal as a BftError (BFT_ERR_RECONFIGURATION_REFUSED). */
  async reconfigure(operations: readonly ReconfigurationOperation[], options: { readonly fromView?: number; readonly timeoutMs?: number } = {}): Promise<ViewDescription> {
    const result = await this.submit(this.sign(options.fromView ?? this.client.view.number, operations));
    if (!result.accepted) throw new BftError('BFT_ERR_RECONFIGURATION_REFUSED', `the replicas refused the reconfiguration: ${result.reason}`);
    this.client.useView(result.view);
    await this.waitForView(result.view, options.timeoutMs);
    return result.view;
  }
}
