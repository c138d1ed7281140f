"""The WSGI applications the application-hosting benchmark serves (bench/README.md).

Each module exposes `app`; every server under test imports the same module from the same file
(`apps.<module>:app` with bench/ on sys.path).
"""
