"""Speed, memory and size benchmarks (B ids of docs/benchmarks.md): two arms in one run, a RATIO last line."""
