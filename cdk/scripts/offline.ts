// Builds the CDK app the way `cdk synth` would, but offline and without the
// build products: no AWS account, no Docker, no cargo-lambda.
//
// - The context is cdk.json's (a bare `new App()` would ignore its feature
//   flags), plus `aws:cdk:bundling-stacks: []` so no asset is bundled, plus the
//   lookups CDK would otherwise make against the account (zones, prefix list).
// - The rotation function's asset directory is a temporary one holding a
//   stand-in `bootstrap` (a shell script: the stack's architecture check only
//   inspects ELF files). Synthesis only hashes and copies it.
// - The web app's image context is a temporary directory with a stand-in
//   Dockerfile: a DockerImageAsset is only fingerprinted at synthesis, never
//   built, so the real Dockerfile (and Docker) are not needed.
//
// Used by the tests (test/*.test.ts) and by scripts/synth.ts, which writes the
// templates cfn-lint and checkov check.

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { addStacks } from '../lib/app';
import type { PgRotationStack } from '../lib/stack';

export const OFFLINE_ENV = { account: '123456789012', region: 'eu-west-1' } as const;

/**
 * Everything this process writes to the temporary directory (stand-in assets,
 * assemblies, CDK's staging, the tests' scratch directories) goes into one
 * directory of its own, removed when the process exits: `npm test` (node's
 * test runner, a process per file) leaves nothing in /tmp, with or without
 * scripts/test.sh. os.tmpdir() reads TMPDIR at each call, and this module is
 * imported before any synthesis.
 */
export const PROCESS_TMPDIR = fs.mkdtempSync(path.join(os.tmpdir(), 'pg-rotation-cdk-'));
process.env.TMPDIR = PROCESS_TMPDIR;
process.on('exit', () => fs.rmSync(PROCESS_TMPDIR, { recursive: true, force: true }));

/** Lookups that `cdk deploy` would make; fixed values for offline synthesis. */
export const OFFLINE_LOOKUPS = {
  availabilityZones: 'eu-west-1a,eu-west-1b',
  s3PrefixListId: 'pl-6da54004',
};

const CDK_DIR = path.resolve(__dirname, '..');

export function cdkJsonContext(): Record<string, unknown> {
  const cdkJson = JSON.parse(fs.readFileSync(path.join(CDK_DIR, 'cdk.json'), 'utf8')) as { context: Record<string, unknown> };
  return cdkJson.context;
}

let fixtures: { rotationFnAssetDir: string; webAppImageDir: string } | undefined;

/** Stand-ins for the function binary and the image's build context, made once per process. */
export function offlineFixtures(): { rotationFnAssetDir: string; webAppImageDir: string } {
  if (fixtures) return fixtures;
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fixtures-'));
  const fn = path.join(root, 'rotation-fn');
  fs.mkdirSync(fn);
  fs.writeFileSync(path.join(fn, 'bootstrap'), '#!/bin/sh\n# stand-in for the cargo-lambda build, used for offline synthesis only\nexit 1\n', {
    mode: 0o755,
  });
  const image = path.join(root, 'image');
  fs.mkdirSync(image);
  fs.writeFileSync(path.join(image, 'Dockerfile'), '# stand-in for the repository Dockerfile, never built\nFROM scratch\n');
  fixtures = { rotationFnAssetDir: fn, webAppImageDir: image };
  return fixtures;
}

export interface OfflineApp {
  readonly app: App;
  readonly stack: PgRotationStack;
}

/**
 * The app with cdk.json's context and the offline stand-ins; `context`
 * overrides any key, as `-c key=value` would (values may be strings).
 */
export function offlineApp(context: Record<string, unknown> = {}, outdir?: string): OfflineApp {
  const app = new App({
    outdir,
    context: {
      ...cdkJsonContext(),
      'aws:cdk:bundling-stacks': [],
      ...OFFLINE_LOOKUPS,
      ...offlineFixtures(),
      ...context,
    },
  });
  const { stack } = addStacks(app, { ...OFFLINE_ENV });
  return { app, stack };
}

/**
 * Where synthesised assemblies are shared between the processes of one test
 * run (node:test runs each file in its own process, and synthesis, with cdk-nag
 * and CDK's template validation, is the slow part): scripts/test.sh sets it to
 * a fresh directory per run. Unset, every process synthesises for itself.
 */
export const SYNTH_CACHE_ENV = 'PG_ROTATION_SYNTH_CACHE';

export interface Synthesis extends OfflineApp {
  /** The cloud assembly directory holding the templates. */
  readonly outdir: string;
}

/**
 * Synthesises `context` (cdk-nag runs, and fails it on a finding), or, when
 * this test run already did, builds the constructs only and points at that
 * run's assembly. Construction alone is cheap and gives the tests the objects
 * they resolve logical ids and references against.
 */
export function synthesise(context: Record<string, unknown> = {}): Synthesis {
  const cacheRoot = process.env[SYNTH_CACHE_ENV] || undefined; // empty = unset
  const key = createHash('sha256').update(JSON.stringify(context)).digest('hex').slice(0, 16);
  const cached = cacheRoot ? path.join(cacheRoot, key) : undefined;
  if (cached && fs.existsSync(path.join(cached, 'manifest.json'))) {
    const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pg-rotation-cdk-constructs-'));
    return { ...offlineApp(context, scratch), outdir: cached };
  }
  const outdir = fs.mkdtempSync(path.join(cacheRoot ?? os.tmpdir(), 'pg-rotation-cdk-out-'));
  const built = offlineApp(context, outdir);
  built.app.synth();
  if (!cached) return { ...built, outdir };
  try {
    fs.renameSync(outdir, cached);
  } catch {
    // Another process got there first with the same assembly; keep ours where it is.
    return { ...built, outdir };
  }
  return { ...built, outdir: cached };
}
