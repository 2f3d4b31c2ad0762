// The core must be deterministic (DESIGN §2): no node: module, no clock, no randomness, no timers, no
// I/O, directly or through anything it imports from this repository.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const coreDir = dirname(fileURLToPath(import.meta.url));
const srcDir = resolve(coreDir, '..');
/** Packages the core may reach: pure encoders and validators. */
const allowedPackages = new Set(['msgpackr', 'zod']);
const forbidden: Array<[RegExp, string]> = [
  [/(?<![.\w])Date\b/, 'reads the clock (Date)'],
  [/(?<![.\w])performance\s*\./, 'reads the clock (performance)'],
  [/(?<![.\w])process\s*\./, 'touches the process'],
  [/Math\s*\.\s*random/, 'draws a random number'],
  [/(?<![.\w])crypto\s*\./, 'uses global crypto'],
  [/\bset(Timeout|Interval|Immediate)\b/, 'starts a timer'],
  [/\bqueueMicrotask\b/, 'schedules work'],
  [/(?<![.\w])Buffer\b/, 'uses Node Buffer'],
  [/\bfetch\s*\(/, 'does I/O'],
  [/\brequire\s*\(/, 'loads modules dynamically'],
  [/\bimport\s*\(/, 'loads modules dynamically'],
];

function importsOf(source: string): string[] {
  return [...source.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+['"]([^'"]+)['"]/gm)].map((m) => m[1] as string);
}

/** Code without comments and import clauses (their module paths are checked separately). */
function codeOnly(source: string): string {
  return source
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/(^|[^:'"`])\/\/.*$/gm, '$1')
    .replace(/^\s*(?:import|export)\b[^;]*?from\s+['"][^'"]+['"];?/gm, '');
}

/** Every repository file the core reaches through imports, with what each imports. */
function reachableFromCore(): Map<string, string[]> {
  const seen = new Map<string, string[]>();
  const queue = readdirSync(coreDir)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))
    .map((f) => join(coreDir, f));
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (seen.has(file)) continue;
    const imports = importsOf(readFileSync(file, 'utf8'));
    seen.set(file, imports);
    for (const spec of imports) if (spec.startsWith('.')) queue.push(resolve(dirname(file), spec));
  }
  return seen;
}

describe('the consensus core is deterministic', () => {
  const files = reachableFromCore();

  it('reaches only its own modules, the protocol, constants and errors', () => {
    const outside = [...files.keys()]
      .map((f) => relative(srcDir, f))
      .filter((f) => !/^(core|protocol)\//.test(f) && f !== 'constants.ts' && f !== 'errors.ts');
    expect(outside).toEqual([]);
    expect(files.size).toBeGreaterThan(8);
  });

  it('imports nothing from node: and no package but pure codecs', () => {
    const bad: string[] = [];
    for (const [file, imports] of files) {
      for (const spec of imports) {
        if (spec.startsWith('.')) continue;
        if (spec.startsWith('node:') || !allowedPackages.has(spec)) bad.push(`${relative(srcDir, file)} imports ${spec}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('reads no clock, no random source, starts no timer and does no I/O', () => {
    const bad: string[] = [];
    for (const file of files.keys()) {
      const code = codeOnly(readFileSync(file, 'utf8'));
      for (const [pattern, what] of forbidden) if (pattern.test(code)) bad.push(`${relative(srcDir, file)} ${what}`);
    }
    expect(bad).toEqual([]);
  });

  it('would notice a forbidden import (the scanner itself works)', () => {
    expect(importsOf("import { x } from 'node:fs';\nexport { y } from './y.ts';")).toEqual(['node:fs', './y.ts']);
    expect(forbidden.some(([p]) => p.test('const t = Date.now();'))).toBe(true);
    expect(forbidden.some(([p]) => p.test('Math.random()'))).toBe(true);
    expect(forbidden.some(([p]) => p.test('crypto.randomBytes(8)'))).toBe(true);
    expect(forbidden.some(([p]) => p.test('this.crypto.sign(payload)'))).toBe(false);
  });
});
