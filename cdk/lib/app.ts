// Builds the CDK app from its context: used by bin/app.ts (the CLI's entry
// point), by scripts/synth.ts (offline synthesis in CI) and by the tests.
//
// One stack. The web app image is published by `cdk deploy` to the CDK
// bootstrap's container-assets repository (which exists before any
// deployment) and copied into the stack's own repository during the
// deployment (lib/image-registry.ts says why), so the first `cdk deploy` in an
// empty account does not depend on the order in which the CLI builds assets
// and deploys stacks.

import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { settingsFromContext } from './settings';
import { PgRotationStack } from './stack';

export const STACK_ID = 'PgRotation';

export interface Stacks {
  readonly stack: PgRotationStack;
}

export function addStacks(app: App, env: { account?: string; region?: string }): Stacks {
  const settings = settingsFromContext((key) => app.node.tryGetContext(key));
  const stackName = (app.node.tryGetContext('stackName') as string | undefined) ?? STACK_ID;
  const stack = new PgRotationStack(app, STACK_ID, {
    stackName,
    env,
    description: 'PostgreSQL on RDS with Secrets Manager rotation (Rust Lambda) and a web app fleet',
    settings,
  });
  // cdk-nag's AWS Solutions rules run at every synthesis; an unacknowledged
  // finding stops it. Acknowledgements live beside the construct they excuse.
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { stack };
}
