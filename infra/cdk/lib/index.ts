export * from './sluice';
export type { SluiceCdcProps, SluiceCdcResources } from './cdc';
export type { SluiceExtractProps, SluiceExtractResources } from './extract';
