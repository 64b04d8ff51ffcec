--
-- PostgreSQL database cluster dump
--
-- tests/pg/handwritten.sql: quoting forms pg_dump itself never writes, run by psql and by pgr.
SET standard_conforming_strings = off;
CREATE TABLE public.hw (id int, s text);
INSERT INTO public.hw VALUES (1, 'back\\slash and \' quote; still string');
INSERT INTO public.hw VALUES (2, E'e-string \'; \\ ');
SET standard_conforming_strings = on;
INSERT INTO public.hw VALUES (3, 'plain \ backslash');
INSERT INTO public.hw VALUES (4, E'\x41\101\u00e9');
INSERT INTO public.hw VALUES (5, U&'\00e9 unicode ; escape');
INSERT INTO public.hw VALUES (6, $$dollar ; 'quote' $$ || $a$nested $$ ; $a$);
/* nested /* block ; */ comment ; */ INSERT INTO public.hw VALUES (7, 'after comment');
INSERT INTO public.hw -- a comment ; inside
  VALUES (8, 'multi
line ; value');
INSERT INTO public.hw VALUES (9, 'crlf line')
;
insert into "public"."hw" values (10, 'quoted "ident"');
COPY public.hw (id, s) FROM stdin;
11	copy with \\. inside
12	\N
13	tab\tescaped
\.
DO $do$ BEGIN PERFORM 1; RAISE NOTICE 'notice ; %', 'x'; END $do$;
CREATE TABLE public.e ("x;y" int);
COPY public.e FROM stdin;
\.
\connect postgres
SELECT 'after reconnect';
--
-- PostgreSQL database cluster dump complete
--

