package io.clusterlvm.clvm.lvm;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs the real {@code lvm} binary for one host: {@code lvm <subcommand> <extra args> <args>} with
 * that host's environment ({@code LVM_SYSTEM_DIR}), stdin from /dev/null (a prompt is answered "no"
 * instead of hanging), stdout, stderr and exit code captured unchanged, and a timeout after which
 * the process is killed. It takes no cluster lock: callers run it under the locks of the command's
 * {@link LockPlan}.
 *
 * <p>Seeing other hosts' changes: nothing to refresh with lvm 2.03. lvmetad, which cached metadata
 * in 2.02, is gone; every command scans the devices (O_DIRECT, bypassing the page cache) and reads
 * the metadata from disk, so a report on host B right after a commit on host A shows it (tested).
 * The one host-local cache left is the hints file ({@code /run/lvm/hints}, which devices are PVs),
 * and another host's pvcreate or vgextend never invalidates it: this host's lvm would then not scan
 * the new PV, and see the VG with a PV missing. So every run gets {@code --nohints} (which every
 * lvm 2.03 command accepts), whatever the host's lvm.conf says (Debian's default is "all");
 * lvmlockd turns hints off for shared VGs the same way.
 *
 * <p>Thread-safe; each call starts its own process.
 */
public final class LvmRunner {

  public static final Duration DEFAULT_TIMEOUT = Duration.ofMinutes(2);

  private static final Logger LOG = LoggerFactory.getLogger(LvmRunner.class);
  private static final String SEPARATOR = "|";
  private static final List<String> REPORT_OPTIONS =
      List.of("--noheadings", "--nosuffix", "--units", "b", "--separator", SEPARATOR);
  private static final Duration DEFAULT_OUTPUT_DRAIN_TIMEOUT = Duration.ofSeconds(10);

  /** How often a killed lvm that has not ended yet is logged again. */
  private static final Duration KILL_WAIT = Duration.ofSeconds(10);

  private static final AtomicInteger READER_THREADS = new AtomicInteger();
  private static final ExecutorService OUTPUT_READERS =
      Executors.newCachedThreadPool(
          r -> {
            Thread t = new Thread(r, "lvm-output-" + READER_THREADS.getAndIncrement());
            t.setDaemon(true);
            t.setUncaughtExceptionHandler(
                (thread, e) -> LOG.error("[thread={}] lvm output reader died", thread, e));
            return t;
          });

  private final String hostName;
  private final String lvmBinary;
  private final Map<String, String> environment;
  private final List<String> extraArgs;
  private final Duration timeout;

  /** How long output is read after lvm exited (a child it left may hold the pipes open). */
  private final Duration outputDrainTimeout;

  /** How long a killed lvm is waited for; null: until it ends. */
  private final Duration killWait;

  /**
   * The lvm processes this runner started that have not exited, killed ones included: an lvm in
   * uninterruptible I/O outlives SIGKILL, and writes the VG's metadata until it ends.
   */
  private final java.util.Set<ProcessHandle> live;

  /**
   * Those an earlier agent process left running ({@link #stopEarlierRuns}): not this JVM's
   * children, so their end is polled, and a zombie (ended, not yet reaped by init) counts as ended.
   */
  private final java.util.Set<LvmRunRecord.EarlierRun> earlier;

  /** Where the running lvm processes are recorded for a later agent process; null: nowhere. */
  private final LvmRunRecord record;

  private LvmRunner(Builder builder) {
    this.hostName = builder.hostName;
    this.lvmBinary = builder.lvmBinary;
    this.environment = Map.copyOf(builder.environment);
    this.extraArgs = List.copyOf(builder.extraArgs);
    this.timeout = builder.timeout;
    this.outputDrainTimeout = builder.outputDrainTimeout;
    this.killWait = null;
    this.live = java.util.concurrent.ConcurrentHashMap.newKeySet();
    this.earlier = java.util.concurrent.ConcurrentHashMap.newKeySet();
    this.record = builder.record;
  }

  private LvmRunner(LvmRunner base, Duration killWait) {
    this.hostName = base.hostName;
    this.lvmBinary = base.lvmBinary;
    this.environment = base.environment;
    this.extraArgs = base.extraArgs;
    this.timeout = base.timeout;
    this.outputDrainTimeout = base.outputDrainTimeout;
    this.killWait = killWait;
    this.live = base.live;
    this.earlier = base.earlier;
    this.record = base.record;
  }

  /**
   * This runner, for callers that must go on after a killed lvm that will not die (the agent's
   * start, its membership thread): its run returns after {@code wait}. The lvm stays in {@link
   * #stillRunning}, which both runners share.
   */
  public LvmRunner withKillWait(Duration wait) {
    return new LvmRunner(this, wait);
  }

  public static Builder builder() {
    return new Builder();
  }

  /** Whether {@code args} has lvm's {@code --nohints} (which lvm also takes as --no-hints). */
  private static boolean givesNoHints(List<String> args) {
    return args.stream()
        .anyMatch(a -> a.startsWith("--") && a.substring(2).replace("-", "").equals("nohints"));
  }

  /** Runs a classified command (its locks are the caller's business). */
  public LvmResult run(LvmCommand command) throws IOException, InterruptedException {
    return run(command.subcommand(), command.args(), false);
  }

  /**
   * Runs a command that changes something (an activation, metadata). Once lvm has exited, its exit
   * code says what it did, and the caller's locks follow it: output that can't be read then (a
   * child lvm left holds the pipe) is noted on stderr instead of failing the run, which would read
   * as "lvm did not run" and release the locks of LVs it activated. Output read only in part is
   * dropped.
   */
  public LvmResult runChange(LvmCommand command) throws IOException, InterruptedException {
    return run(command.subcommand(), command.args(), true);
  }

  /**
   * Runs {@code lvm <subcommand> <extra args> <args>} and waits for it.
   *
   * @return the result whatever the exit code
   * @throws LvmTimeoutException if it ran longer than the timeout (the process is killed)
   * @throws InterruptedException if interrupted while waiting (the process is killed)
   */
  public LvmResult run(String subcommand, List<String> args)
      throws IOException, InterruptedException {
    return run(subcommand, args, false);
  }

  private LvmResult run(String subcommand, List<String> args, boolean outputMayBeLost)
      throws IOException, InterruptedException {
    List<String> command = new ArrayList<>(args.size() + extraArgs.size() + 2);
    command.add(lvmBinary);
    command.add(subcommand);
    command.addAll(extraArgs);
    if (!givesNoHints(extraArgs) && !givesNoHints(args)) {
      command.add("--nohints"); // lvm refuses it twice
    }
    command.addAll(args);

    ProcessBuilder builder = new ProcessBuilder(command);
    builder.environment().putAll(environment);
    builder.redirectInput(ProcessBuilder.Redirect.from(Path.of("/dev/null").toFile()));
    long start = System.nanoTime();
    Process process = builder.start();
    track(process.toHandle(), command);
    CompletableFuture<byte[]> stdout = drain(process.getInputStream());
    CompletableFuture<byte[]> stderr = drain(process.getErrorStream());
    try {
      if (!process.waitFor(timeout.toNanos(), TimeUnit.NANOSECONDS)) {
        process.destroyForcibly();
        LOG.warn("[host={}] {} timed out after {}; killed", hostName, command, timeout);
        throw new LvmTimeoutException(command, timeout);
      }
      int exitCode = process.exitValue();
      byte[] out;
      byte[] err;
      try {
        out = await(stdout, command);
        err = await(stderr, command);
      } catch (IOException lost) {
        if (!outputMayBeLost) {
          throw lost;
        }
        LOG.warn(
            "[host={}] {} exited with code {}, but its output could not be read: {}",
            hostName,
            command,
            exitCode,
            lost.toString());
        out = stdout.isDone() && !stdout.isCompletedExceptionally() ? stdout.join() : new byte[0];
        err =
            ("clvm-agent: lvm exited with code "
                    + exitCode
                    + ", but its output could not be read ("
                    + lost.getMessage()
                    + ")\n")
                .getBytes(java.nio.charset.StandardCharsets.UTF_8);
      }
      LvmResult result =
          new LvmResult(command, exitCode, out, err, Duration.ofNanos(System.nanoTime() - start));
      LOG.debug("[host={}] {}", hostName, result);
      return result;
    } finally {
      if (process.isAlive()) {
        process.destroyForcibly();
        awaitKilled(process, command);
      }
    }
  }

  /**
   * Waits for a killed lvm to end, even if interrupted (it is the interrupt that killed it), and
   * (unless {@link #withKillWait}) for as long as it takes: an lvm in uninterruptible I/O outlives
   * SIGKILL, and its command must not return, nor release the locks it runs under, while it may
   * still write.
   */
  private void awaitKilled(Process process, List<String> command) {
    boolean interrupted = Thread.interrupted();
    try {
      long since = System.nanoTime();
      while (process.isAlive()) {
        if (killWait != null && System.nanoTime() - since >= killWait.toNanos()) {
          return; // the caller goes on; stillRunning() names it
        }
        try {
          if (!process.waitFor(KILL_WAIT.toNanos(), TimeUnit.NANOSECONDS)) {
            LOG.error(
                "[host={}] {} (pid {}) still runs {} after SIGKILL (uninterruptible I/O?); its"
                    + " locks stay held until it ends",
                hostName,
                command,
                process.pid(),
                Duration.ofNanos(System.nanoTime() - since));
          }
        } catch (InterruptedException e) {
          interrupted = true;
        }
      }
    } finally {
      if (interrupted) {
        Thread.currentThread().interrupt();
      }
    }
  }

  private void track(ProcessHandle p, List<String> command) {
    live.add(p);
    if (record != null) {
      record.started(p, command);
    }
    p.onExit()
        .thenRun(
            () -> {
              live.remove(p);
              if (record != null) {
                record.ended(p);
              }
            });
  }

  /**
   * Kills the lvm processes that an earlier agent process started and left running (it was killed),
   * as recorded in the run record: they run under the locks of an incarnation that this process is
   * about to attest, or that is purged. From then on they count as this runner's, in {@link
   * #stillRunning} and {@link #awaitNoneRunning}, until they end. Returns their pids.
   */
  public List<Long> stopEarlierRuns() throws IOException {
    if (record == null) {
      return List.of();
    }
    List<Long> pids = new ArrayList<>();
    for (LvmRunRecord.EarlierRun run : record.earlierRuns()) {
      ProcessHandle p = run.process();
      LOG.warn(
          "[host={}] lvm pid {} ({}) started by an earlier agent process still runs; killing it",
          hostName,
          p.pid(),
          run.command());
      p.destroyForcibly();
      earlier.add(run);
      pids.add(p.pid());
    }
    return pids;
  }

  /**
   * The pids of lvm processes this runner started that still run, killed ones included, and of
   * those an earlier agent process left running.
   */
  public List<Long> stillRunning() {
    return java.util.stream.Stream.concat(
            live.stream().filter(ProcessHandle::isAlive).map(ProcessHandle::pid),
            earlierStillRunning().stream())
        .sorted()
        .toList();
  }

  /** The pids of the lvm processes an earlier agent process left running that have not ended. */
  public List<Long> earlierStillRunning() {
    for (LvmRunRecord.EarlierRun run : earlier) {
      if (ended(run.process())) {
        earlier.remove(run);
        record.ended(run);
      }
    }
    return earlier.stream().map(r -> r.process().pid()).sorted().toList();
  }

  /** Whether a process that is not this JVM's child has ended: gone, or a zombie. */
  private static boolean ended(ProcessHandle p) {
    return !p.isAlive() || ProcStat.of(p.pid()).map(ProcStat::ended).orElseGet(() -> !p.isAlive());
  }

  /** Waits up to {@code wait} until no lvm this runner started runs; the pids still running. */
  public List<Long> awaitNoneRunning(Duration wait) throws InterruptedException {
    long deadline = System.nanoTime() + wait.toNanos();
    CompletableFuture<?>[] exits =
        live.stream().map(ProcessHandle::onExit).toArray(CompletableFuture[]::new);
    try {
      CompletableFuture.allOf(exits).get(wait.toNanos(), TimeUnit.NANOSECONDS);
    } catch (TimeoutException e) {
      // some still run: named below
    } catch (ExecutionException e) {
      throw new IllegalStateException(e);
    }
    while (!earlier.isEmpty() && System.nanoTime() < deadline) {
      earlierStillRunning(); // drops those that ended
      if (!earlier.isEmpty()) {
        TimeUnit.MILLISECONDS.sleep(100);
      }
    }
    return stillRunning();
  }

  /** The VG's metadata sequence number. */
  public long vgSeqno(String vg) throws IOException, InterruptedException {
    List<String[]> rows = report("vgs", List.of("-o", "vg_seqno", vg), 1, "seqno of " + vg);
    if (rows.size() != 1) {
      throw new IOException("vgs " + vg + " returned " + rows.size() + " rows");
    }
    return Long.parseLong(rows.get(0)[0]);
  }

  /** Every VG this host sees, sorted by name. */
  public List<VolumeGroupInfo> volumeGroups() throws IOException, InterruptedException {
    List<VolumeGroupInfo> vgs = new ArrayList<>();
    for (String[] row :
        report(
            "vgs",
            List.of(
                "-o",
                "vg_name,vg_uuid,vg_seqno,vg_size,vg_free,lv_count,pv_count,vg_lock_type",
                "-O",
                "vg_name"),
            8,
            "VG list")) {
      vgs.add(
          new VolumeGroupInfo(
              row[0],
              row[1],
              Long.parseLong(row[2]),
              Long.parseLong(row[3]),
              Long.parseLong(row[4]),
              Integer.parseInt(row[5]),
              Integer.parseInt(row[6]),
              row[7]));
    }
    return vgs;
  }

  /** Names of every VG this host sees, sorted (stage 2 of a {@link LockPlan}). */
  public List<String> volumeGroupNames() throws IOException, InterruptedException {
    return volumeGroups().stream().map(VolumeGroupInfo::name).toList();
  }

  /**
   * How many PVs of {@code vg} this host does not see (lvm's {@code vg_missing_pv_count}); 0 if it
   * does not see the VG at all (one that a vgcreate is about to make).
   */
  public int missingPhysicalVolumes(String vg) throws IOException, InterruptedException {
    try {
      List<String[]> rows =
          report("vgs", List.of("-o", "vg_missing_pv_count", vg), 1, "missing PVs of " + vg);
      return rows.isEmpty() ? 0 : Integer.parseInt(rows.get(0)[0].trim());
    } catch (LvmException e) {
      if (!volumeGroupNames().contains(vg)) {
        return 0;
      }
      throw e;
    }
  }

  /** The visible LVs of {@code vg}, sorted by name; empty if the VG does not exist. */
  public List<LogicalVolumeInfo> logicalVolumes(String vg)
      throws IOException, InterruptedException {
    return logicalVolumesIfSeen(vg).orElse(List.of());
  }

  /**
   * The visible LVs of {@code vg}, sorted by name; empty if lvm does not see the VG (never made, or
   * its PVs gone from this host).
   */
  public Optional<List<LogicalVolumeInfo>> logicalVolumesIfSeen(String vg)
      throws IOException, InterruptedException {
    try {
      return Optional.of(logicalVolumes(List.of(vg)));
    } catch (LvmException e) {
      if (!volumeGroupNames().contains(vg)) {
        return Optional.empty();
      }
      throw e;
    }
  }

  /** The visible LVs of every VG, sorted by VG then name. */
  public List<LogicalVolumeInfo> logicalVolumes() throws IOException, InterruptedException {
    return logicalVolumes(List.of());
  }

  /**
   * Expands the plan's wildcards from lists read now, without holding the locks that would keep
   * them stable (see {@link LockPlan}); for dry runs and tests. Under locks, use {@link
   * LockPlan#volumeGroupLocks} and {@link LockPlan#logicalVolumeLocks} stage by stage.
   */
  public LockPlan resolve(LockPlan plan) throws IOException, InterruptedException {
    if (plan.isResolved()) {
      return plan;
    }
    List<String> vgs = volumeGroupNames();
    Map<String, List<String>> lvs = new LinkedHashMap<>();
    for (String vg : plan.volumeGroupsNeedingLvList(vgs)) {
      lvs.put(vg, logicalVolumes(vg).stream().map(LogicalVolumeInfo::name).toList());
    }
    return plan.resolve(vgs, lvs);
  }

  @Override
  public String toString() {
    return "LvmRunner[host=" + hostName + " lvm=" + lvmBinary + " env=" + environment + "]";
  }

  private List<LogicalVolumeInfo> logicalVolumes(List<String> vgs)
      throws IOException, InterruptedException {
    List<String> args = new ArrayList<>();
    args.addAll(
        List.of(
            "-o",
            "vg_name,lv_name,lv_uuid,lv_size,lv_attr,pool_lv,origin",
            "-O",
            "vg_name,lv_name"));
    args.addAll(vgs);
    List<LogicalVolumeInfo> lvs = new ArrayList<>();
    for (String[] row : report("lvs", args, 7, "LV list")) {
      lvs.add(
          new LogicalVolumeInfo(
              row[0], row[1], row[2], Long.parseLong(row[3]), row[4], row[5], row[6]));
    }
    return lvs;
  }

  /** Runs a report with fixed, parseable formatting and splits its rows. */
  private List<String[]> report(String subcommand, List<String> args, int columns, String what)
      throws IOException, InterruptedException {
    List<String> all = new ArrayList<>(REPORT_OPTIONS);
    all.addAll(args);
    LvmResult result = run(subcommand, all);
    if (!result.succeeded()) {
      throw new LvmException("reading " + what + " failed", result);
    }
    List<String[]> rows = new ArrayList<>();
    for (String line : result.stdout().split("\n")) {
      String trimmed = line.strip();
      if (trimmed.isEmpty()) {
        continue;
      }
      // VG and LV names can't contain '|' (lvm allows [A-Za-z0-9+_.-]), so the split is exact.
      String[] row = trimmed.split("\\|", -1);
      if (row.length != columns) {
        throw new LvmException("unexpected " + what + " row '" + trimmed + "'", result);
      }
      rows.add(row);
    }
    return rows;
  }

  private static CompletableFuture<byte[]> drain(InputStream in) {
    return CompletableFuture.supplyAsync(
        () -> {
          try (in) {
            return in.readAllBytes();
          } catch (IOException e) {
            throw new UncheckedIOException(e);
          }
        },
        OUTPUT_READERS);
  }

  private byte[] await(CompletableFuture<byte[]> output, List<String> command)
      throws IOException, InterruptedException {
    try {
      // The process has exited; its pipes close unless it left a child holding them.
      return output.get(outputDrainTimeout.toNanos(), TimeUnit.NANOSECONDS);
    } catch (ExecutionException e) {
      throw new IOException("reading output of " + command, e.getCause());
    } catch (TimeoutException e) {
      throw new IOException("output of " + command + " still open after the process exited", e);
    }
  }

  /** Configures a runner; defaults: {@code lvm} from PATH, no extra args, 2-minute timeout. */
  public static final class Builder {
    private String hostName = "local";
    private String lvmBinary = "lvm";
    private final Map<String, String> environment = new LinkedHashMap<>();
    private final List<String> extraArgs = new ArrayList<>();
    private Duration timeout = DEFAULT_TIMEOUT;
    private Duration outputDrainTimeout = DEFAULT_OUTPUT_DRAIN_TIMEOUT;
    private LvmRunRecord record;

    private Builder() {}

    /**
     * Records each running lvm in {@code dir} (one file per process), so that the next agent
     * process finds those an agent that was killed left running: {@link #stopEarlierRuns}.
     */
    public Builder runRecord(Path dir, String bootId) throws IOException {
      this.record = new LvmRunRecord(dir, bootId);
      return this;
    }

    /** Name used in log context only. */
    public Builder hostName(String hostName) {
      this.hostName = Objects.requireNonNull(hostName);
      return this;
    }

    public Builder lvmBinary(String lvmBinary) {
      this.lvmBinary = Objects.requireNonNull(lvmBinary);
      return this;
    }

    /** Sets {@code LVM_SYSTEM_DIR} (the directory holding this host's lvm.conf). */
    public Builder systemDir(Path systemDir) {
      return environment("LVM_SYSTEM_DIR", systemDir.toString());
    }

    /** An extra environment variable for every run. */
    public Builder environment(String name, String value) {
      environment.put(Objects.requireNonNull(name), Objects.requireNonNull(value));
      return this;
    }

    /** Every variable of {@code env}. */
    public Builder environment(Map<String, String> env) {
      env.forEach(this::environment);
      return this;
    }

    /**
     * Options put right after the subcommand on every run, e.g. {@code --driverloaded n} or {@code
     * --config devices/hints=none} (every lvm 2.03 command accepts both).
     */
    public Builder extraArgs(Collection<String> args) {
      extraArgs.addAll(args);
      return this;
    }

    public Builder timeout(Duration timeout) {
      if (timeout.isNegative() || timeout.isZero()) {
        throw new IllegalArgumentException("timeout must be positive: " + timeout);
      }
      this.timeout = timeout;
      return this;
    }

    /** How long output is read after lvm exited; 10 s unless a test wants less. */
    Builder outputDrainTimeout(Duration wait) {
      this.outputDrainTimeout = wait;
      return this;
    }

    public LvmRunner build() {
      return new LvmRunner(this);
    }
  }
}
