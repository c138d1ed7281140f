"""What is served: the router (the Host/authority check and the mount table) and the
handlers behind it — static files, uploads, the status page, hosted WSGI applications.
Handlers see Requests and return Responses; they never touch sockets."""
