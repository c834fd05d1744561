// Session state through node mysql2: server-side prepared statements (execute) reused across
// transactions, the text protocol next to them, and reads that must see the session's writes.
//
// Usage: node mysql2_session.js HOST PORT USER PASSWORD DBNAME NAME (NAME: a table of its own).
// Prints one line per check; exits 1 at the first mismatch.
const mysql = require('mysql2/promise');

const [host, port, user, password, database, name] = process.argv.slice(2);
const table = `drv_mysql2_${name}`;

function check(what, got, want) {
  const g = JSON.stringify(got), w = JSON.stringify(want);
  if (g !== w) {
    console.log(`FAIL ${what}: got ${g}, want ${w}`);
    process.exit(1);
  }
  console.log(`ok ${what}: ${g}`);
}

(async () => {
  const c = await mysql.createConnection({ host, port: +port, user, password, database, connectTimeout: 10000 });
  await c.query(`DROP TABLE IF EXISTS ${table}`);
  await c.query(`CREATE TABLE ${table} (id int PRIMARY KEY, v varchar(20))`);
  for (let i = 1; i <= 5; i++) {
    const [res] = await c.execute(`INSERT INTO ${table} (id, v) VALUES (?, ?)`, [i, `v${i}`]);
    check(`prepared insert ${i} affected`, res.affectedRows, 1);
    const [rows] = await c.execute(`SELECT count(*) AS n FROM ${table} WHERE id <= ?`, [i]);
    check(`prepared read back ${i}`, rows, [{ n: i }]);
  }
  for (let round = 0; round < 3; round++) {
    await c.beginTransaction();
    await c.execute(`UPDATE ${table} SET v = ? WHERE id = ?`, [`r${round}`, 1]);
    const [inside] = await c.execute(`SELECT v FROM ${table} WHERE id = ?`, [1]);
    check(`prepared read inside transaction ${round}`, inside, [{ v: `r${round}` }]);
    if (round === 1) await c.rollback(); else await c.commit();
  }
  const [after] = await c.query(`SELECT v FROM ${table} WHERE id = 1`);
  check('text read after the transactions', after, [{ v: 'r2' }]);
  try {
    await c.execute('SELECT * FROM no_such_table_here WHERE id = ?', [1]);
    check('missing table', 'no error', 'error');
  } catch (e) {
    check('missing table errno', e.errno, 1146);
  }
  await c.query(`DROP TABLE ${table}`);
  await c.end();
  console.log('done');
})().catch((e) => { console.log(`FAIL ${e}`); process.exit(1); });
