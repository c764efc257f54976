"""varprop: derive (sympy) and check (Monte Carlo) how moments propagate through random networks."""
