export * from './sluice';
