export { storeContract, randomId } from './store-contract.js';
export type { StoreContractOptions } from './store-contract.js';
export { httpConformance } from './http-conformance.js';
export type { HttpConformanceOptions } from './http-conformance.js';
export { conformanceHandler } from './conformance-handler.js';
export type { ConformanceHandler } from './conformance-handler.js';
