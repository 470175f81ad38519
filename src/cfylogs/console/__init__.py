"""The web console's domain pieces, without HTTP (docs/CONSOLE.md).

- `tail.py`: the live tail, a bounded ring of the events ingest accepted, for
  viewers that poll it with a cursor; it costs ingest one attribute test while
  nobody watches.
- `history.py`: a small in-memory history of the relay's rates and backlog
  (one sample every 5 s for an hour), so the console's charts are filled
  when the page opens.
- `static/`: the page itself (HTML, CSS, JavaScript modules), served as a
  fixed list of files by `cfylogs.http.console`.
"""
