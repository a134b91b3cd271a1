// The deployment rehearsal (scripts/rehearse.ts): the pinned CLI's own
// orchestration of `cdk deploy --all` over the assembly, AWS stubbed. It must
// reject the design that failed in an empty account (a stack creating the
// repository that another stack's image is published to: the CLI prebuilds the
// image before either stack deploys) and pass the app as it is.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { App, DefaultStackSynthesizer, Stack } from 'aws-cdk-lib';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import { OFFLINE_ENV, offlineFixtures, synthesise } from '../scripts/offline';
import { rehearse } from '../scripts/rehearse';
import { DEFAULTS, LEAN } from './configurations';

/** The v2 shape: a registry stack creates the repository the main stack's image is published to. */
function repositoryCreatedByAnotherStack(): string {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'rehearsal-v2-'));
  const app = new App({ outdir });
  const registry = new Stack(app, 'Images', { env: OFFLINE_ENV });
  new ecr.Repository(registry, 'Repo', { repositoryName: 'pgrotation/web-app' });
  const main = new Stack(app, 'Main', {
    env: OFFLINE_ENV,
    synthesizer: new DefaultStackSynthesizer({ imageAssetsRepositoryName: 'pgrotation/web-app' }),
  });
  new ecrAssets.DockerImageAsset(main, 'Image', { directory: offlineFixtures().webAppImageDir });
  main.addDependency(registry);
  app.synth();
  return outdir;
}

describe('deployment rehearsal (the CLI’s work graph, asset prebuild on)', () => {
  it('rejects a repository created by a stack of the same deployment (the first-deploy failure of v2)', async () => {
    await assert.rejects(rehearse(repositoryCreatedByAnotherStack()), /No ECR repository named 'pgrotation\/web-app'.*Is this account bootstrapped\?/);
  });

  for (const [name, context] of Object.entries({ DEFAULTS, LEAN })) {
    it(`${name}: the first deploy in an empty account builds and publishes everything, then deploys the stack`, async () => {
      const { steps } = await rehearse(synthesise(context).outdir);
      const deployAt = steps.findIndex((s) => s.startsWith('deploy '));
      assert.equal(steps.filter((s) => s.startsWith('deploy ')).length, 1, 'one stack');
      assert.ok(steps.some((s) => s.startsWith('build ') && /^build [0-9a-f]{64}$/.test(s)), 'the web app image is built');
      for (const s of steps.slice(0, deployAt)) assert.match(s, /^(build|publish) /);
      assert.equal(steps.filter((s) => s.startsWith('build ')).length, steps.filter((s) => s.startsWith('publish ')).length);
    });
  }
});
