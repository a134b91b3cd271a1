// The configurations the tests synthesise. Values are strings, as they arrive
// from `cdk deploy -c key=value`.

/** cdk.json's defaults: alternating users, master secret rotated too, AWS-managed keys. */
export const DEFAULTS: Record<string, unknown> = {};

/** Every opt-in and opt-out flipped. */
export const SINGLE_USER_CMK: Record<string, unknown> = {
  rotationStrategy: 'single-user',
  customerManagedKey: 'true',
  rotateMasterSecret: 'false',
  rotationDays: '7',
  appIngressCidr: '203.0.113.7/32',
  deletionProtection: 'false',
  multiAz: 'true',
  alertEmail: 'ops@example.com',
  scanImagesOnPush: 'false',
};
