# What Spilo's bootstrap (post_init.sh) leaves in a new cluster, written for kubesim from the facts in
# CSM_BACKUPS.md §3: roles, pg_cron, file_fdw log tables, the zmon helpers, and per database the
# user_management and metric_helpers schemas with their extensions. Run once per new cluster, in
# postgres and template1 (so the databases the operator creates later carry the per-database part).
#
# Where this differs from a real Spilo (a fixture that is not quite the field, on purpose):
# - pg_auth_mon and bg_mon are not packaged for Debian: not loaded, not created;
# - the metric_helpers and zmon functions are short stand-ins of the real ones (same names, kinds,
#   owners, SECURITY DEFINER and grants, so the same dependencies; simpler bodies);
# - CSM's Spilo images run older PostgreSQL majors (12-14); these servers are Debian's 15.

# Extensions that must be preloaded (bg_mon left out: not packaged).
PRELOAD = "pg_stat_statements,pg_stat_kcache,pg_cron,set_user"

# postgresql.conf lines for a Spilo-like server: pg_cron's launcher stays connected to `postgres`.
CONF = """
# kubesim: Spilo's preloaded extensions (pg_auth_mon, bg_mon are not packaged for Debian)
shared_preload_libraries = '%s'
cron.database_name = 'postgres'
""" % PRELOAD

HUMAN_ROLE = "zalandos"

# Once per cluster, in the postgres database (post_init.sh's first part).
CLUSTER_SQL = """
SET synchronous_commit = 'local';
CREATE ROLE admin CREATEDB NOLOGIN;
CREATE ROLE cron_admin NOLOGIN;
CREATE ROLE robot_zmon NOLOGIN;
CREATE ROLE {human} NOLOGIN;
GRANT cron_admin TO admin;

CREATE EXTENSION IF NOT EXISTS pg_cron;
REVOKE SELECT ON cron.job FROM public;
GRANT SELECT ON cron.job TO cron_admin;
GRANT UPDATE (database, nodename) ON cron.job TO cron_admin;
GRANT USAGE ON SCHEMA cron TO cron_admin;
REVOKE EXECUTE ON FUNCTION cron.schedule(text, text) FROM public;
GRANT EXECUTE ON FUNCTION cron.schedule(text, text) TO cron_admin;
REVOKE EXECUTE ON FUNCTION cron.unschedule(bigint) FROM public;
GRANT EXECUTE ON FUNCTION cron.unschedule(bigint) TO cron_admin;

CREATE EXTENSION IF NOT EXISTS file_fdw SCHEMA public;
CREATE SERVER pglog FOREIGN DATA WRAPPER file_fdw;
CREATE TABLE public.postgres_log (
    log_time timestamp(3) with time zone, user_name text, database_name text, process_id integer,
    connection_from text, session_id text NOT NULL, session_line_num bigint NOT NULL, command_tag text,
    session_start_time timestamp with time zone, virtual_transaction_id text, transaction_id bigint,
    error_severity text, sql_state_code text, message text, detail text, hint text, internal_query text,
    internal_query_pos integer, context text, query text, query_pos integer, location text,
    application_name text,
    CONSTRAINT postgres_log_check CHECK (false) NO INHERIT
);
GRANT SELECT ON public.postgres_log TO admin;
{log_tables}

CREATE EXTENSION IF NOT EXISTS plpython3u;
CREATE SCHEMA zmon_utils;
GRANT USAGE ON SCHEMA zmon_utils TO robot_zmon;
CREATE TYPE zmon_utils.system_information AS (parameter text, setting text);
CREATE FUNCTION zmon_utils.get_database_cluster_information() RETURNS TABLE (parameter text, setting text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path TO 'pg_catalog' AS $body$
BEGIN
  RETURN QUERY SELECT 'server_version_num'::text, current_setting('server_version_num')
    UNION ALL SELECT 'is_in_recovery', pg_is_in_recovery()::text;
END
$body$;
CREATE FUNCTION zmon_utils.get_database_cluster_system_information() RETURNS SETOF zmon_utils.system_information
LANGUAGE plpython3u SECURITY DEFINER SET search_path TO 'pg_catalog' AS $body$
import os
return [("load.1", str(os.getloadavg()[0]))]
$body$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA zmon_utils TO robot_zmon;
"""

LOG_TABLE = """
CREATE FOREIGN TABLE public.postgres_log_{i} () INHERITS (public.postgres_log) SERVER pglog
    OPTIONS (filename '../pg_log/postgresql-{i}.csv', format 'csv', header 'false');
GRANT SELECT ON public.postgres_log_{i} TO admin;
CREATE VIEW public.failed_authentication_{i} WITH (security_barrier) AS
    SELECT * FROM public.postgres_log_{i} WHERE command_tag = 'authentication' AND error_severity = 'FATAL';
GRANT SELECT ON TABLE public.failed_authentication_{i} TO robot_zmon;
"""

# In every database that allows connections at bootstrap (postgres, template1).
DATABASE_SQL = """
CREATE SCHEMA IF NOT EXISTS user_management;
GRANT USAGE ON SCHEMA user_management TO admin;
CREATE FUNCTION user_management.random_password(length integer) RETURNS text LANGUAGE sql
  SET search_path TO 'pg_catalog' AS
$$ SELECT substr(string_agg(md5(random()::text), ''), 1, length) FROM generate_series(1, length / 32 + 1) $$;
CREATE FUNCTION user_management.create_application_user(username text) RETURNS text LANGUAGE plpgsql
  SECURITY DEFINER SET search_path TO 'pg_catalog' AS
$f$ DECLARE pw text; BEGIN
  pw := user_management.random_password(20);
  EXECUTE format($$ CREATE USER %I WITH PASSWORD %L $$, username, pw);
  RETURN pw;
END $f$;
CREATE FUNCTION user_management.create_user(username text) RETURNS void LANGUAGE plpgsql
  SECURITY DEFINER SET search_path TO 'pg_catalog' AS
$f$ BEGIN
  EXECUTE format($$ CREATE USER %I IN ROLE {human}, admin $$, username);
  EXECUTE format($$ ALTER ROLE %I SET log_statement TO 'all' $$, username);
END $f$;
CREATE FUNCTION user_management.drop_user(username text) RETURNS void LANGUAGE plpgsql
  SECURITY DEFINER SET search_path TO 'pg_catalog' AS
$f$ BEGIN EXECUTE format($$ DROP ROLE %I $$, username); END $f$;
CREATE FUNCTION user_management.terminate_backend(pid integer) RETURNS boolean LANGUAGE sql
  SECURITY DEFINER SET search_path TO 'pg_catalog' AS $$ SELECT pg_terminate_backend(pid) $$;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA user_management FROM public;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA user_management TO admin;
GRANT SELECT ON pg_catalog.pg_stat_activity TO admin;

CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public;
CREATE EXTENSION IF NOT EXISTS pg_stat_kcache SCHEMA public;
CREATE EXTENSION IF NOT EXISTS set_user SCHEMA public;
GRANT EXECUTE ON FUNCTION public.set_user(text) TO admin;
GRANT EXECUTE ON FUNCTION public.pg_stat_statements_reset(oid, oid, bigint) TO admin;

CREATE SCHEMA IF NOT EXISTS metric_helpers AUTHORIZATION postgres;
GRANT USAGE ON SCHEMA metric_helpers TO admin, robot_zmon;
CREATE FUNCTION metric_helpers.get_table_bloat_approx(OUT t_database name, OUT t_schema_name name,
    OUT t_table_name name, OUT t_real_size numeric, OUT t_bloat_size double precision)
  RETURNS SETOF record LANGUAGE sql SECURITY DEFINER STABLE SET search_path TO 'pg_catalog' AS
$$ SELECT current_database(), n.nspname, c.relname, c.relpages::numeric * current_setting('block_size')::numeric, 0::float8
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' $$;
REVOKE ALL ON FUNCTION metric_helpers.get_table_bloat_approx() FROM public;
GRANT EXECUTE ON FUNCTION metric_helpers.get_table_bloat_approx() TO admin, robot_zmon;
CREATE VIEW metric_helpers.table_bloat AS SELECT * FROM metric_helpers.get_table_bloat_approx();
REVOKE ALL ON TABLE metric_helpers.table_bloat FROM public;
GRANT SELECT ON TABLE metric_helpers.table_bloat TO admin, robot_zmon;
CREATE FUNCTION metric_helpers.pg_stat_statements(showtext boolean) RETURNS SETOF public.pg_stat_statements
  LANGUAGE sql STABLE SECURITY DEFINER STRICT AS $$ SELECT * FROM public.pg_stat_statements(showtext) $$;
REVOKE ALL ON FUNCTION metric_helpers.pg_stat_statements(boolean) FROM public;
GRANT EXECUTE ON FUNCTION metric_helpers.pg_stat_statements(boolean) TO admin, robot_zmon;
CREATE VIEW metric_helpers.pg_stat_statements AS SELECT * FROM metric_helpers.pg_stat_statements(true);
REVOKE ALL ON TABLE metric_helpers.pg_stat_statements FROM public;
GRANT SELECT ON TABLE metric_helpers.pg_stat_statements TO admin, robot_zmon;
"""


def cluster_sql(human=HUMAN_ROLE):
    tables = "".join(LOG_TABLE.format(i=i) for i in range(8))
    return CLUSTER_SQL.format(human=human, log_tables=tables)


def database_sql(human=HUMAN_ROLE):
    return DATABASE_SQL.format(human=human)


def bootstrap(psql, human=HUMAN_ROLE):
    """psql(sql, db) runs SQL as the superuser. The cluster part in postgres, then the per-database
    part in postgres and template1, as post_init.sh does for every database that allows connections."""
    psql(cluster_sql(human), "postgres")
    for db in ("postgres", "template1"):
        psql(database_sql(human), db)


if __name__ == "__main__":
    # For tests outside the simulator: `spilo.py options` prints the server's -c options,
    # `spilo.py cluster-sql` and `spilo.py database-sql` the two parts of the bootstrap.
    import sys
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "options":
        print("-c shared_preload_libraries=%s -c cron.database_name=postgres" % PRELOAD)
    elif what == "cluster-sql":
        sys.stdout.write(cluster_sql())
    elif what == "database-sql":
        sys.stdout.write(database_sql())
    else:
        sys.exit("usage: spilo.py options|cluster-sql|database-sql")
