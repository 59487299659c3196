// Synthesizes the construct without building the Rust functions (bundling skipped), so the
// tests run in seconds.
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { Sluice, SluiceProps } from '../lib/sluice';

export const BASE: SluiceProps = {
  lakeBucketName: 'sluice-lake-test',
  pipelineLocation: 's3://sluice-lake-test/_sluice/pipeline.toml',
  glueDatabaseName: 'sluice_test',
  hashKeySecretArn: 'arn:aws:secretsmanager:eu-west-1:111111111111:secret:hash-key-AbCdEf',
  redshift: { workgroupArn: 'arn:aws:redshift-serverless:eu-west-1:111111111111:workgroup/abc' },
  alarmEmail: 'ops@example.com',
};

export function synth(props: Partial<SluiceProps> = {}): { stack: Stack; template: Template; sluice: Sluice } {
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
  const stack = new Stack(app, 'SluiceTest', { env: { account: '111111111111', region: 'eu-west-1' } });
  const sluice = new Sluice(stack, 'Sluice', { ...BASE, ...props });
  return { stack, template: Template.fromStack(stack), sluice };
}

/** cdk-nag's AwsSolutions pack over the stack: the findings left after the acknowledgments. */
export function nagFindings(stack: Stack) {
  return new AwsSolutionsChecks().validateScope(stack);
}
