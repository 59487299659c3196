export * from './sluice';
export type { SluiceCdcProps, SluiceCdcResources } from './cdc';
