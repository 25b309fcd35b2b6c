CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
INSERT INTO t SELECT i, printf('row %d', i), randomblob(40) FROM n;
CREATE INDEX tb ON t(b);
SELECT count(*), sum(length(c)) FROM t;
SELECT 'ready';
