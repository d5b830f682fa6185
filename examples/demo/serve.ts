/**
 * The demo shop on its own, for trying `oncely check` or `oncely inspect` against it.
 *
 * Run: npm run demo:serve            (port 3000; PORT=4000 npm run demo:serve for another)
 * Then: npx oncely check http://127.0.0.1:3000/orders -d '{"amountCents": 4999, "email": "ada@example.com"}'
 */
import { startShop } from './shop.js';

const shop = await startShop({ port: Number(process.env.PORT ?? 3000) });
console.log(`shop on ${shop.url}: POST /orders (oncely), POST /orders-unsafe (unprotected)`);
console.log(`store: sqlite:${shop.databasePath}   (Ctrl-C to stop; the database is deleted)`);
process.once('SIGINT', () => void shop.close().then(() => process.exit(0)));
