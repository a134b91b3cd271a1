// Builds the CDK app from its context: used by bin/app.ts (the CLI's entry
// point), by scripts/synth.ts (offline synthesis in CI) and by the tests.

import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { settingsFromContext } from './settings';
import { PgRotationStack } from './stack';

export const STACK_ID = 'PgRotation';

export function addStacks(app: App, env: { account?: string; region?: string }): PgRotationStack {
  const settings = settingsFromContext((key) => app.node.tryGetContext(key));
  const stackName = app.node.tryGetContext('stackName') as string | undefined;
  const stack = new PgRotationStack(app, STACK_ID, {
    stackName,
    env,
    description: 'PostgreSQL on RDS with Secrets Manager rotation (Rust Lambda) and a web app on EC2',
    settings,
  });
  // cdk-nag's AWS Solutions rules run at every synthesis; an unacknowledged
  // finding stops it. Acknowledgements live beside the construct they excuse.
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return stack;
}
