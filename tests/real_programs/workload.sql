-- workload.sql: a real SQLite workload for tests/test_real_programs.py:
-- tables with keys and indexes, inserts through a recursive CTE, updates,
-- deletes, queries with aggregates, joins, a view, a trigger, a transaction,
-- string functions and a temporary table.
CREATE TABLE customer(id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT);
CREATE TABLE product(id INTEGER PRIMARY KEY, title TEXT, price REAL);
CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customer(id),
                    product_id INTEGER REFERENCES product(id), qty INTEGER, note TEXT);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE TABLE audit(n INTEGER);
INSERT INTO audit VALUES (0);
CREATE TRIGGER orders_audit AFTER INSERT ON orders BEGIN UPDATE audit SET n = n + 1; END;

BEGIN;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 400)
INSERT INTO customer SELECT i, 'customer ' || i, CASE i % 5 WHEN 0 THEN 'Oslo' WHEN 1 THEN 'Lima'
  WHEN 2 THEN 'Pune' WHEN 3 THEN 'Kyiv' ELSE 'Turin' END FROM c;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 60)
INSERT INTO product SELECT i, printf('product-%03d', i), (i * 37 % 100) + 0.99 FROM c;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000)
INSERT INTO orders SELECT i, 1 + (i * 7) % 400, 1 + (i * 13) % 60, 1 + i % 9,
  substr('lorem ipsum dolor sit amet consectetur', 1 + i % 20) FROM c;
COMMIT;

UPDATE product SET price = price * 1.1 WHERE id % 3 = 0;
DELETE FROM orders WHERE qty = 9 AND id % 2 = 0;

CREATE VIEW revenue AS
  SELECT c.city AS city, p.title AS title, sum(o.qty * p.price) AS total, count(*) AS n
  FROM orders o JOIN customer c ON c.id = o.customer_id JOIN product p ON p.id = o.product_id
  GROUP BY c.city, p.title;

SELECT count(*), sum(qty) FROM orders;
SELECT city, round(sum(total), 2), sum(n) FROM revenue GROUP BY city ORDER BY city;
SELECT title, round(total, 2) FROM revenue WHERE city = 'Oslo' ORDER BY total DESC LIMIT 5;
SELECT c.name, count(o.id) AS k FROM customer c LEFT JOIN orders o ON o.customer_id = c.id
  GROUP BY c.id HAVING k > 8 ORDER BY k DESC, c.name LIMIT 5;
SELECT upper(name), length(name), replace(city, 'i', 'I') FROM customer WHERE id IN (1, 2, 3);
SELECT group_concat(title, '|') FROM (SELECT title FROM product ORDER BY price DESC LIMIT 4);
CREATE TEMP TABLE t AS SELECT customer_id, max(qty) AS m FROM orders GROUP BY customer_id;
SELECT count(*), sum(m) FROM t;
SELECT n FROM audit;
