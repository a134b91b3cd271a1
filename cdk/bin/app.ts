#!/usr/bin/env node
// Entry point of `npx cdk synth|deploy` (see cdk.json). Settings come from
// cdk.json's context and `-c key=value`; see cdk/README.md for the keys.

import { App } from 'aws-cdk-lib';
import { addStacks } from '../lib/app';

const app = new App();
addStacks(app, { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION });
app.synth();
