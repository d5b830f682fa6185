import { storeContract } from '../../testing/index.js';
import { MemoryStore } from './index.js';

storeContract('memory', { makeStore: () => new MemoryStore() });
