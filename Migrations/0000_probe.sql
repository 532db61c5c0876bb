CREATE TABLE probe(x);
-- has """ and \ and #" and é
