package io.clusterlvm.fence.domain;

/** A record and the znode version it was read at, for compare-and-set writes. */
public record Versioned<T>(T value, int version) {}
