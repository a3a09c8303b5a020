"""Changes the centre makes: plans, notices with calendar files, confirmed orders, what is coming."""
