package io.clusterlvm.fence.config;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.function.Predicate;
import java.util.stream.Collectors;

/**
 * Ordered key=value options for a fence agent, as written in cluster.conf attributes.
 *
 * <p>Immutable. {@link #toString()} masks secret values (passwords, SNMP communities) as {@value
 * #MASK}, so an instance may be logged; {@link #asMap()} returns the real values and must never be
 * logged. Paths of password scripts are not secret and are shown.
 */
public final class AgentOptions {
  /** What a secret value is shown as. */
  public static final String MASK = "******";

  public static final AgentOptions EMPTY = new AgentOptions(Map.of());

  private final Map<String, String> values;

  private AgentOptions(Map<String, String> values) {
    this.values = Collections.unmodifiableMap(new LinkedHashMap<>(values));
  }

  /** Options in the iteration order of {@code values}. */
  public static AgentOptions of(Map<String, String> values) {
    return values.isEmpty() ? EMPTY : new AgentOptions(values);
  }

  /**
   * Credentials of fence-agents 4.x that are not called a password: the SNMP community,
   * fence_ipmilan's IPMIv2 Kg key, the cloud agents' keys and tokens (fence_aws, fence_aliyun,
   * fence_ibm_vpc, fence_ibm_powervs). Not {@code token_file} or {@code tlskey}, which name files,
   * nor fence_scsi's {@code key}, a reservation key.
   */
  private static final Set<String> CREDENTIALS =
      Set.of("community", "hexadecimal_kg", "secret_key", "access_key", "apikey", "token");

  /**
   * True for keys whose value is a secret: any spelling of a password ({@code passwd}, {@code
   * password}, {@code snmp_priv_passwd}, ...) except the {@code *_script} variants, and the other
   * credentials agents take ({@link #CREDENTIALS}). Their values are masked in logs and CLI output
   * and dropped from agent output; only passwords keep a cluster.conf out of ZooKeeper ({@link
   * #isPassword}).
   */
  public static boolean isSecret(String key) {
    return isPassword(key) || CREDENTIALS.contains(normalize(key));
  }

  /**
   * True for a password key ({@code passwd}, {@code snmp_priv_passwd}, ...): one with a {@code
   * *_script} form, so a cluster.conf can do without it inline. The other credentials have none
   * (fence_ipmilan reads its Kg key only inline), so a file that holds one is still published.
   */
  public static boolean isPassword(String key) {
    String k = normalize(key);
    return k.contains("passw") && !k.endsWith("_script");
  }

  /** True for keys naming a program whose output is a secret ({@code passwd_script} etc.). */
  public static boolean isSecretScript(String key) {
    String k = normalize(key);
    return k.contains("passw") && k.endsWith("_script");
  }

  // fencing.py accepts both "passwd-script" and "passwd_script", in any case on the command line.
  private static String normalize(String key) {
    return key.toLowerCase(Locale.ROOT).replace('-', '_');
  }

  public Optional<String> get(String key) {
    return Optional.ofNullable(values.get(key));
  }

  /** The real values, secrets included: pass them to an agent, never to a log. */
  public Map<String, String> asMap() {
    return values;
  }

  public boolean isEmpty() {
    return values.isEmpty();
  }

  /** These options with {@code overrides} laid over them; overridden keys keep their position. */
  public AgentOptions overriddenBy(AgentOptions overrides) {
    if (overrides.isEmpty()) {
      return this;
    }
    Map<String, String> merged = new LinkedHashMap<>(values);
    merged.putAll(overrides.values);
    return new AgentOptions(merged);
  }

  /** These options without the given keys. */
  public AgentOptions without(Set<String> keys) {
    Map<String, String> kept = new LinkedHashMap<>(values);
    kept.keySet().removeAll(keys);
    return of(kept);
  }

  /** The values of the {@link #isPassword password} keys that are set. */
  public Set<String> passwordValues() {
    return valuesOf(AgentOptions::isPassword);
  }

  /** Values of the secret keys (never log them): what agent output must be scrubbed of. */
  public Set<String> secretValues() {
    return valuesOf(AgentOptions::isSecret);
  }

  private Set<String> valuesOf(Predicate<String> keys) {
    return values.entrySet().stream()
        .filter(e -> keys.test(e.getKey()) && !e.getValue().isEmpty())
        .map(Map.Entry::getValue)
        .collect(Collectors.toUnmodifiableSet());
  }

  /** Commands of the {@code *passwd_script} keys, in option order. */
  public List<String> secretScripts() {
    return values.entrySet().stream()
        .filter(e -> isSecretScript(e.getKey()) && !e.getValue().isBlank())
        .map(Map.Entry::getValue)
        .toList();
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof AgentOptions other && values.equals(other.values);
  }

  @Override
  public int hashCode() {
    return values.hashCode();
  }

  /** Secret keys masked, values shown: safe to log. */
  @Override
  public String toString() {
    return describe(Set.of());
  }

  /**
   * Like {@link #toString()}, and also masks any value containing one of {@code knownSecrets}: for
   * a password that reached a misspelt key, once the password is known (e.g. from its script).
   */
  public String describe(Set<String> knownSecrets) {
    return values.entrySet().stream()
        .map(
            e ->
                e.getKey()
                    + "="
                    + (isSecret(e.getKey()) || containsAny(e.getValue(), knownSecrets)
                        ? MASK
                        : e.getValue()))
        .collect(Collectors.joining(", ", "{", "}"));
  }

  private static boolean containsAny(String value, Set<String> needles) {
    return needles.stream().anyMatch(value::contains);
  }
}
