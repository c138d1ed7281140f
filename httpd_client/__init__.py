"""httpd-client: the confirmation and load tester, driven by JSON spec files.

Modules, imports pointing down the list:

    cli.py      click commands `confirm` and `load`, exit codes, the progress bar
    report.py   load summary (text, JSON), percentiles, tables
    confirm.py  confirmation over http.client, response checks
    load.py     forking the load processes, progress counters, collecting results
    engine.py   one process's selector loop: the load generator's hot path
    wire.py     sans-I/O response framing (head, chunked) and error names
    request.py  --url targets, turning spec entries into request bytes
    spec.py     reading and validating CTest.json / LTest.json

See docs/client.md for usage.
"""
