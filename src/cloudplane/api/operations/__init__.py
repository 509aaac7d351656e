"""Operations as resources (both faces) and the admin audit log, with the Operation-Location header."""
