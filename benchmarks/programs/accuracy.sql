-- accuracy.sql — the SQLite shell's workload in the accuracy benchmark.
CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c REAL);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
INSERT INTO t SELECT i, printf('row %d %s', i, hex(randomblob(8))), i * 0.5 FROM n;
CREATE INDEX tb ON t(b);
CREATE TABLE u AS SELECT a % 17 AS k, count(*) AS n, sum(c) AS s FROM t GROUP BY a % 17;
SELECT k, n, s FROM u ORDER BY k LIMIT 5;
UPDATE t SET b = upper(b) WHERE a % 3 = 0;
DELETE FROM t WHERE a % 5 = 0;
SELECT count(*), max(length(b)) FROM t;
SELECT group_concat(b, ',') FROM (SELECT b FROM t WHERE a < 50);
CREATE VIEW v AS SELECT t.a, u.n FROM t JOIN u ON t.a % 17 = u.k;
SELECT count(*) FROM v WHERE n > 100;
