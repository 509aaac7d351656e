"""What every face shares: authentication, pagination, error rendering."""
