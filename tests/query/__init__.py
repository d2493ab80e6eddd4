"""Tests of the query language (raftkv.query): pure, no cluster needed."""
