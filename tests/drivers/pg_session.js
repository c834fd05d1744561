// Session state through node-postgres (`pg`): a temp table, named prepared statements
// ({name, text, values}) reused across transactions, and reads that must see the session's own
// writes.
//
// Usage: node pg_session.js HOST PORT USER PASSWORD DBNAME NAME (NODE_PATH: where `pg` is).
// Prints one line per check; exits 1 at the first mismatch.
'use strict';
const { Client } = require('pg');

const [host, port, user, password, database, name] = process.argv.slice(2);
const table = `drv_pg_${name}`;

function check(what, got, want) {
  const g = JSON.stringify(got);
  if (g !== JSON.stringify(want)) {
    console.log(`FAIL ${what}: got ${g}, want ${JSON.stringify(want)}`);
    process.exit(1);
  }
  console.log(`ok ${what}: ${g}`);
}

async function value(client, query) {
  const res = await client.query(query);
  return res.rows[0][res.fields[0].name];
}

async function main() {
  const conn = new Client({ host, port: Number(port), user, password, database, connectionTimeoutMillis: 10000 });
  await conn.connect();

  // A temp table over several statements and transactions.
  await conn.query('CREATE TEMP TABLE scratch (x int)');
  for (let i = 1; i <= 3; i++) {
    await conn.query('INSERT INTO scratch VALUES ($1)', [i]);
  }
  await conn.query('BEGIN');
  await conn.query('INSERT INTO scratch SELECT generate_series(4, 10)');
  check('temp rows inside a transaction', await value(conn, 'SELECT count(*)::int AS n FROM scratch'), 10);
  await conn.query('COMMIT');
  check('temp rows after commit', await value(conn, 'SELECT count(*)::int AS n FROM scratch'), 10);

  // Named prepared statements: parsed once, then bound by name, across transactions.
  for (let i = 0; i < 5; i++) {
    await conn.query('BEGIN');
    const above = { name: 'above', text: 'SELECT count(*)::int AS n FROM scratch WHERE x > $1', values: [i] };
    check(`named statement in transaction ${i}`, await value(conn, above), 10 - i);
    await conn.query('COMMIT');
    const twice = { name: 'twice', text: 'SELECT $1::int * 2 AS n', values: [i] };
    check(`named statement outside a transaction ${i}`, await value(conn, twice), i * 2);
  }

  // SQL PREPARE / EXECUTE.
  await conn.query('PREPARE triple(int) AS SELECT $1 * 3 AS n');
  for (let i = 0; i < 3; i++) {
    check(`EXECUTE triple(${i})`, await value(conn, `EXECUTE triple(${i})`), i * 3);
  }
  await conn.query('DEALLOCATE triple');

  // The temp table gone, the session shares server connections again: the named statements are
  // bound by name on whichever connection serves the next query.
  await conn.query('DROP TABLE scratch');
  for (let i = 0; i < 5; i++) {
    await conn.query('BEGIN');
    const twice = { name: 'twice', text: 'SELECT $1::int * 2 AS n', values: [i + 10] };
    check(`named statement after the temp table is gone ${i}`, await value(conn, twice), (i + 10) * 2);
    await conn.query('COMMIT');
    check(`again outside a transaction ${i}`, await value(conn, { ...twice, values: [i + 20] }), (i + 20) * 2);
  }

  // Writes read back at once.
  await conn.query(`DROP TABLE IF EXISTS ${table}`);
  await conn.query(`CREATE TABLE ${table} (id int PRIMARY KEY, v int NOT NULL)`);
  await conn.query(`INSERT INTO ${table} VALUES (1, 0)`);
  check('read of a new table', await value(conn, `SELECT v FROM ${table} WHERE id = 1`), 0);
  for (let i = 1; i <= 10; i++) {
    await conn.query({ name: 'write', text: `UPDATE ${table} SET v = $1 WHERE id = 1`, values: [i] });
    check(`read after write ${i}`, await value(conn, { name: 'read', text: `SELECT v FROM ${table} WHERE id = $1`, values: [1] }), i);
    check(`simple read after write ${i}`, await value(conn, `SELECT v FROM ${table} WHERE id = 1`), i);
  }
  await conn.query('BEGIN');
  await conn.query(`UPDATE ${table} SET v = v + 1 WHERE id = 1`);
  check('read in the writing transaction', await value(conn, { name: 'read', text: `SELECT v FROM ${table} WHERE id = $1`, values: [1] }), 11);
  await conn.query('COMMIT');
  check('read after commit', await value(conn, { name: 'read', text: `SELECT v FROM ${table} WHERE id = $1`, values: [1] }), 11);

  await conn.query(`DROP TABLE ${table}`);
  await conn.end();
  console.log('PG DONE');
}

main().catch((e) => {
  console.log(`FAIL ${e.code || ''} ${e.message}`);
  process.exit(1);
});
