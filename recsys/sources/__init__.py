"""sources: where data comes in. ``formats`` parses one line of a MovieLens or CSV file,
``download`` fetches and checks the MovieLens archives, ``readers`` reads files and tables
into parsed rows (bad lines kept with file, line and reason), ``ingest`` applies the table
rules (scale, duplicates) and returns the ingest tables. Imports the foundations only
(config, errors, schemas); writes nothing."""
