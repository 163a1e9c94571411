-- Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d), as
-- POSTGRES_USER, after it created POSTGRES_DB (mlflow): the Prefect server gets a database of its own.
CREATE DATABASE prefect;
