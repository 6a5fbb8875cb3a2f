-- wrk script for the benchmark: POST the chat body given in $BENCH_BODY.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY")
  or '{"model":"bench","messages":[{"role":"user","content":"Say hello."}]}'
