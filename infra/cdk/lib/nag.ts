// cdk-nag AwsSolutions findings Sluice accepts, each with its reason. The Sluice construct
// acknowledges them itself, so a user's app running the AwsSolutions pack stays clean.
import { CfnResource, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import { flattenCfnReference } from 'cdk-nag/lib/utils/flatten-cfn-reference';
import { IConstruct } from 'constructs';

// Why a statement's resource ends in a wildcard, by statement Sid.
const WILDCARD_REASONS: Record<string, string> = {
  Logs: "the function's (or Glue jobs') own log group: its streams are created at run time",
  ReadPipeline: 'the pipeline file',
  ReadRaw: 'objects under raw/ only: source files arrive with keys unknown at deploy time',
  WriteOutputs: 'objects under the lake prefixes this role writes (curated/, quarantine/, ...): keys are made per run',
  Manifests: 'objects under manifests/ only: one manifest per source object',
  GlueRunClaims: 'objects under state/glue/ only: one claim per source object and ETag',
  AbortUploads: 'multipart uploads under curated/ and quarantine/ only',
  Catalog: "tables of the pipeline's Glue database only: tables are registered at run time",
  ReadTransformOutputs: 'objects under manifests/ and curated/ only: named by the manifests at run time',
  WriteLoadOutputs: 'objects under loads/ and quarantine/ only: one per load',
  LoadState: "objects under state/loads/ only: each table's lease and statement records",
  FollowOwnStatements:
    'Redshift Data API statement ids cannot be scoped by ARN; the redshift-data:statement-owner-iam-userid condition limits these to the statements this role submitted (as template.yaml)',
  ReadCopyInputs: 'objects under curated/ and loads/ only: the files a COPY manifest names',
  CdcState: "objects under state/cdc/ only: wal-decoder's progress through a transaction too large for one run",
  Spill: 'objects under spill/cdc/ only: one per change too large for a Kinesis record, keyed by its LSN',
  WriteRawChanges: 'objects under raw/cdc/ and quarantine/_cdc-sink/ only: one per table and batch of the stream',
  ReadSpill: 'objects under spill/cdc/ only: named by the pointer records on the stream',
  RawParts: "objects under raw/ only: each table's parts (raw_prefix comes from the pipeline file), keyed by shard, range and index at run time",
  ExtractState: "objects under state/extract/ only: each table's and shard's lease and watermark",
  ShardSecrets: "the shards' secrets as given: a wildcard only where the caller wrote one (a secret's ARN ends in a random suffix)",
  VpcNetworkInterfaces:
    "Lambda creates and deletes the function's network interfaces in the VPC with its role (as AWSLambdaVPCAccessExecutionRole): EC2's Describe actions take no resource, and the interfaces' ids are not known in advance",
};

const RULE_REASONS: Record<string, Record<string, string>> = {
  TransformDLQ: {
    'AwsSolutions-SQS3': "this queue is itself a dead-letter queue: the transform function's on-failure destination",
  },
  CdcSinkDLQ: {
    'AwsSolutions-SQS3': "this queue is itself a dead-letter queue: the on-failure destination of cdc-sink's Kinesis event source mapping",
  },
  LakeBucket: {
    'AwsSolutions-S1':
      'server access logs need a second bucket this construct does not own; use CloudTrail S3 data events or point the lake at a log bucket of your own',
  },
  GlueTransformJob: {
    'AwsSolutions-GL1':
      'CloudWatch log encryption needs a Glue security configuration with a customer KMS key (and the key policy for Glue); the logs hold counts and errors, not rows',
    'AwsSolutions-GL3': 'job bookmarks are disabled (--job-bookmark-option job-bookmark-disable): there is nothing to encrypt',
  },
};

/** Acknowledges the findings Sluice accepts on `scope` (the Sluice construct). */
export function acknowledgeNagFindings(scope: IConstruct): void {
  const stack = Stack.of(scope);
  for (const [id, rules] of Object.entries(RULE_REASONS)) {
    const child = scope.node.tryFindChild(id);
    if (!child) continue;
    for (const [rule, reason] of Object.entries(rules)) Validations.of(child).acknowledge({ id: rule, reason });
  }
  for (const node of scope.node.findAll()) {
    if (!(node instanceof iam.CfnRole)) continue;
    // Resolved to CloudFormation's shape (PolicyName, PolicyDocument.Statement[]).
    const policies = stack.resolve((node as unknown as { _toCloudFormation(): any })._toCloudFormation())
      ?.Resources?.[stack.resolve(node.logicalId)]?.Properties?.Policies as
      Array<{ PolicyDocument: { Statement: Array<Record<string, unknown>> } }> | undefined;
    const seen = new Set<string>();
    for (const policy of policies ?? []) {
      for (const st of policy.PolicyDocument.Statement) {
        const resources = ([] as unknown[]).concat(st.Resource ?? []);
        for (const r of resources) {
          const flat = flattenCfnReference(r);
          if (!flat.includes('*') || seen.has(flat)) continue;
          seen.add(flat);
          const reason = WILDCARD_REASONS[String(st.Sid)];
          if (!reason) throw new Error(`no reason for the wildcard resource ${flat} of statement ${String(st.Sid)}`);
          Validations.of(node as CfnResource).acknowledge({ id: `AwsSolutions-IAM5[Resource::${flat}]`, reason });
        }
      }
    }
  }
}
