-- Migration 1: the roles Supabase policies name, and the `realtime` schema.
--
-- Roles are cluster-wide and may already exist (any Supabase project, or another database of the same
-- cluster). They are created only when missing, tolerating a concurrent creator in another database
-- (the advisory lock is per database). They cannot log in: JWT roles are assumed with `set role`.
do $roles$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'anon') then
    begin
      create role anon nologin noinherit;
    exception when duplicate_object or unique_violation then null;
    end;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'authenticated') then
    begin
      create role authenticated nologin noinherit;
    exception when duplicate_object or unique_violation then null;
    end;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'service_role') then
    begin
      create role service_role nologin noinherit bypassrls;
    exception when duplicate_object or unique_violation then null;
    end;
  end if;
end
$roles$;

create schema if not exists realtime;

-- Policies on realtime.messages call realtime.topic() as the JWT role, which needs USAGE.
do $usage$
declare
  grantee text;
begin
  foreach grantee in array array['anon', 'authenticated', 'service_role'] loop
    if not has_schema_privilege(grantee, 'realtime', 'USAGE') then
      execute format('grant usage on schema realtime to %I', grantee);
    end if;
  end loop;
end
$usage$;
