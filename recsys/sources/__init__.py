"""sources: where data comes in. ``formats`` parses one line of a MovieLens or CSV file,
``download`` fetches and checks the MovieLens archives, ``readers`` reads files and tables
into parsed rows (bad lines kept with file, line and reason) through ``source_files`` (the files
a source names), ``ratings_text`` (ratings text through Arrow), ``line_parsing`` (lines through
the line parsers), ``source_tables`` (Parquet and BigQuery) and ``line_numbers``; ``ingest``
applies the table rules (scale, duplicates) and returns the ingest tables. Imports the
foundations only (config, errors, schemas); writes nothing."""
