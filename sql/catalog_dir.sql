-- neurocyte_catalog_dir(): the directory of this catalog file, with a trailing '/'.
-- Every view of a local lake names its Parquet files relative to the catalog file and
-- resolves them through this macro, so a copied or moved lake opens anywhere:
--   * `SET VARIABLE neurocyte_catalog_dir = '/path/to/lake'` wins when set
--     (`neurocyte sql` and transforms.lake.catalog.connect set it);
--   * else DuckDB's default temp_directory, `<database file>.tmp`, names the file
--     opened (plain `duckdb -readonly lake/catalog.duckdb`, from any directory);
--   * else (the catalog ATTACHed to another database, or a custom temp_directory)
--     a clear error asking for the variable.
CREATE OR REPLACE MACRO neurocyte_catalog_dir() AS
CASE
    WHEN coalesce(getvariable('neurocyte_catalog_dir'), '') <> ''
        THEN rtrim(getvariable('neurocyte_catalog_dir'), '/')
    WHEN coalesce(current_setting('temp_directory'), '') LIKE '%.tmp'
        AND parse_dirpath(current_setting('temp_directory')) <> ''  -- in memory: '.tmp'
        THEN parse_dirpath(current_setting('temp_directory'))
    ELSE error(
        'neurocyte: cannot tell which directory this catalog is in (attached, or temp_directory '
        || 'changed): SET VARIABLE neurocyte_catalog_dir = ''<directory holding catalog.duckdb>'''
    )
END || '/';
