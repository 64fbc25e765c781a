// The bbolt peer of Brine's comparison harness: the execution store Bacalhau keeps in
// bbolt (JSON values; buckets `executions`, `execution_events` with a sub-bucket per
// execution, `idx_executions_by_job_id` with a sub-bucket per job,
// `idx_executions_by_state` with a sub-bucket per state, `events` holding the event
// log, `checkpoints`), doing the harness's operations, each in one bbolt transaction
// with its event-log entry.
//
// Built by `cargo xtask bench --peers` against Debian's packaged bbolt source
// (golang-github-coreos-bbolt-dev), in GOPATH mode with modules off, and driven by the
// harness over stdin/stdout, one command per line; every reply is one line:
//
//	open PATH nosync|sync     -> ok
//	create START END          -> NANOS   (executions START..END, built before the clock)
//	update START END          -> NANOS   (each moved to BidAccepted)
//	get START END             -> NANOS
//	byjob START END           -> NANOS   (jobs START..END, 10 executions each)
//	writers N MILLIS          -> COUNT NANOS  (N goroutines creating for MILLIS ms)
//	close                     -> ok
//
// The timings are taken inside this process, so the pipe is not part of them.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// perJob is how many executions each job of the workload has (the harness's PER_JOB).
const perJob = 10

// writersRuns numbers the `writers` commands, so each run's ids are new.
var writersRuns uint64

var (
	bucketExecutions = []byte("executions")
	bucketEvents     = []byte("execution_events")
	bucketByJob      = []byte("idx_executions_by_job_id")
	bucketByState    = []byte("idx_executions_by_state")
	bucketLog        = []byte("events")
	bucketCheckpts   = []byte("checkpoints")
)

// The model, as Brine's JSON (and Bacalhau's models) spell it.

type StateInfo struct {
	State   string `json:"state"`
	Message string `json:"message"`
}

type ComputeState struct {
	State   string            `json:"state"`
	Message string            `json:"message"`
	Details map[string]string `json:"details"`
}

type Resources struct {
	CPUMillis   uint64 `json:"cpu_millis"`
	MemoryBytes uint64 `json:"memory_bytes"`
	DiskBytes   uint64 `json:"disk_bytes"`
	GPUs        uint64 `json:"gpus"`
}

type Job struct {
	ID               string            `json:"id"`
	Name             string            `json:"name"`
	Namespace        string            `json:"namespace"`
	JobType          string            `json:"job_type"`
	Priority         int64             `json:"priority"`
	Count            uint64            `json:"count"`
	Labels           map[string]string `json:"labels"`
	Meta             map[string]string `json:"meta"`
	Config           string            `json:"config"`
	Queue            *string           `json:"queue"`
	InputFiles       []string          `json:"input_files"`
	OutputFiles      []string          `json:"output_files"`
	State            StateInfo         `json:"state"`
	Version          uint64            `json:"version"`
	Revision         uint64            `json:"revision"`
	CreateTime       uint64            `json:"create_time"`
	ModifyTime       uint64            `json:"modify_time"`
	GrabbedTime      *uint64           `json:"grabbed_time"`
	FinishedTime     *uint64           `json:"finished_time"`
	LastAccessedTime *uint64           `json:"last_accessed_time"`
}

type RunOutput struct {
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	ExitCode        *int64 `json:"exit_code"`
	ErrorMsg        string `json:"error_msg"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	StderrTruncated bool   `json:"stderr_truncated"`
}

type Execution struct {
	ID                string            `json:"id"`
	Namespace         string            `json:"namespace"`
	JobID             string            `json:"job_id"`
	Job               Job               `json:"job"`
	EvalID            *string           `json:"eval_id"`
	Name              string            `json:"name"`
	NodeID            *string           `json:"node_id"`
	AllocatedRes      Resources         `json:"allocated_resources"`
	DesiredState      StateInfo         `json:"desired_state"`
	ComputeState      ComputeState      `json:"compute_state"`
	PublishedResult   map[string]string `json:"published_result"`
	RunOutput         *RunOutput        `json:"run_output"`
	PreviousExecution *string           `json:"previous_execution"`
	NextExecution     *string           `json:"next_execution"`
	FollowupEvalID    *string           `json:"followup_eval_id"`
	Revision          uint64            `json:"revision"`
	CreateTime        uint64            `json:"create_time"`
	ModifyTime        uint64            `json:"modify_time"`
}

type LogObject struct {
	Current  *Execution `json:"current"`
	Previous *Execution `json:"previous"`
	Events   []string   `json:"events"`
}

type LogEntry struct {
	Seq        uint64    `json:"seq"`
	Operation  string    `json:"operation"`
	ObjectType string    `json:"object_type"`
	Object     LogObject `json:"object"`
	Timestamp  uint64    `json:"timestamp"`
}

// sample is the harness's i-th execution (brine_bench::sample_execution).
func sample(i uint64) Execution {
	jobID := fmt.Sprintf("job-%08d", i/perJob)
	queue := "default"
	job := Job{
		ID: jobID, Name: fmt.Sprintf("job-%d", i/perJob), Namespace: "default", JobType: "Batch",
		Priority: 0, Count: 1, Labels: map[string]string{"team": "ml"}, Meta: map[string]string{},
		Config:     `{"image":"ubuntu:24.04","cmd":["python","train.py","--epochs","10"]}`,
		Queue:      &queue,
		InputFiles: []string{}, OutputFiles: []string{},
		State: StateInfo{State: "Pending"}, Version: 1, Revision: 1,
	}
	return Execution{
		ID: fmt.Sprintf("exec-%010d", i), Namespace: "default", JobID: jobID, Job: job,
		Name: fmt.Sprintf("execution %d", i), DesiredState: StateInfo{State: "Pending"},
		ComputeState: ComputeState{State: "Created", Details: map[string]string{}},
	}
}

func now() uint64 { return uint64(time.Now().UnixNano()) }

func itob(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// appendLog writes the event-log entry of a change in the same transaction.
func appendLog(tx *bolt.Tx, op string, current, previous *Execution) error {
	log := tx.Bucket(bucketLog)
	seq, err := log.NextSequence()
	if err != nil {
		return err
	}
	entry := LogEntry{Seq: seq, Operation: op, ObjectType: "Execution",
		Object: LogObject{Current: current, Previous: previous, Events: []string{}}, Timestamp: now()}
	value, err := json.Marshal(&entry)
	if err != nil {
		return err
	}
	return log.Put(itob(seq), value)
}

func create(db *bolt.DB, e *Execution) error {
	return db.Update(func(tx *bolt.Tx) error {
		t := now()
		e.Revision, e.CreateTime, e.ModifyTime = 1, t, t
		execs := tx.Bucket(bucketExecutions)
		id := []byte(e.ID)
		if execs.Get(id) != nil {
			return fmt.Errorf("execution %s already exists", e.ID)
		}
		value, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := execs.Put(id, value); err != nil {
			return err
		}
		byJob, err := tx.Bucket(bucketByJob).CreateBucketIfNotExists([]byte(e.JobID))
		if err != nil {
			return err
		}
		if err := byJob.Put(id, []byte{}); err != nil {
			return err
		}
		byState, err := tx.Bucket(bucketByState).CreateBucketIfNotExists([]byte(e.ComputeState.State))
		if err != nil {
			return err
		}
		if err := byState.Put(id, []byte{}); err != nil {
			return err
		}
		return appendLog(tx, "Create", e, nil)
	})
}

func update(db *bolt.DB, id []byte, state string) error {
	return db.Update(func(tx *bolt.Tx) error {
		execs := tx.Bucket(bucketExecutions)
		raw := execs.Get(id)
		if raw == nil {
			return fmt.Errorf("execution %s not found", id)
		}
		var before Execution
		if err := json.Unmarshal(raw, &before); err != nil {
			return err
		}
		next := before
		next.ComputeState = ComputeState{State: state, Message: "moved", Details: map[string]string{}}
		next.Revision++
		next.ModifyTime = now()
		value, err := json.Marshal(&next)
		if err != nil {
			return err
		}
		if err := execs.Put(id, value); err != nil {
			return err
		}
		states := tx.Bucket(bucketByState)
		if old := states.Bucket([]byte(before.ComputeState.State)); old != nil {
			if err := old.Delete(id); err != nil {
				return err
			}
		}
		byState, err := states.CreateBucketIfNotExists([]byte(state))
		if err != nil {
			return err
		}
		if err := byState.Put(id, []byte{}); err != nil {
			return err
		}
		return appendLog(tx, "Update", &next, &before)
	})
}

func get(db *bolt.DB, id []byte) (Execution, error) {
	var e Execution
	err := db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketExecutions).Get(id)
		if raw == nil {
			return fmt.Errorf("execution %s not found", id)
		}
		return json.Unmarshal(raw, &e)
	})
	return e, err
}

func byJob(db *bolt.DB, job []byte) ([]Execution, error) {
	var out []Execution
	err := db.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketByJob).Bucket(job)
		if idx == nil {
			return nil
		}
		execs := tx.Bucket(bucketExecutions)
		return idx.ForEach(func(id, _ []byte) error {
			var e Execution
			if err := json.Unmarshal(execs.Get(id), &e); err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

func open(path string, mode string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, err
	}
	// nosync: commits reach the OS, not the disk (Brine's Buffered); sync: every commit
	// is fsynced before it returns (Brine's Sync).
	db.NoSync = mode == "nosync"
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketExecutions, bucketEvents, bucketByJob, bucketByState, bucketLog, bucketCheckpts} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	return db, err
}

func bounds(args []string) (uint64, uint64) {
	start, err1 := strconv.ParseUint(args[0], 10, 64)
	end, err2 := strconv.ParseUint(args[1], 10, 64)
	if err1 != nil || err2 != nil || end < start {
		fail(fmt.Errorf("bad range %v", args))
	}
	return start, end
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bbolt peer:", err)
	os.Exit(1)
}

func run(db *bolt.DB, cmd string, args []string) string {
	switch cmd {
	case "create":
		start, end := bounds(args)
		records := make([]Execution, 0, end-start)
		for i := start; i < end; i++ {
			records = append(records, sample(i))
		}
		t := time.Now()
		for i := range records {
			if err := create(db, &records[i]); err != nil {
				fail(err)
			}
		}
		return strconv.FormatInt(time.Since(t).Nanoseconds(), 10)
	case "update", "get":
		start, end := bounds(args)
		ids := make([][]byte, 0, end-start)
		for i := start; i < end; i++ {
			ids = append(ids, []byte(fmt.Sprintf("exec-%010d", i)))
		}
		t := time.Now()
		for _, id := range ids {
			var err error
			if cmd == "update" {
				err = update(db, id, "BidAccepted")
			} else {
				_, err = get(db, id)
			}
			if err != nil {
				fail(err)
			}
		}
		return strconv.FormatInt(time.Since(t).Nanoseconds(), 10)
	case "byjob":
		start, end := bounds(args)
		jobs := make([][]byte, 0, end-start)
		for j := start; j < end; j++ {
			jobs = append(jobs, []byte(fmt.Sprintf("job-%08d", j)))
		}
		t := time.Now()
		for _, job := range jobs {
			found, err := byJob(db, job)
			if err != nil || len(found) != perJob {
				fail(fmt.Errorf("job %s: %d executions, %v", job, len(found), err))
			}
		}
		return strconv.FormatInt(time.Since(t).Nanoseconds(), 10)
	case "writers":
		writers, err1 := strconv.Atoi(args[0])
		millis, err2 := strconv.Atoi(args[1])
		if err1 != nil || err2 != nil {
			fail(fmt.Errorf("bad writers command %v", args))
		}
		writersRuns++
		base := writersRuns * 1_000_000_000_000
		var total uint64
		var wg sync.WaitGroup
		t := time.Now()
		deadline := t.Add(time.Duration(millis) * time.Millisecond)
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func(w uint64) {
				defer wg.Done()
				n := uint64(0)
				for time.Now().Before(deadline) {
					e := sample(base + w*1_000_000_000 + n)
					if err := create(db, &e); err != nil {
						fail(err)
					}
					n++
				}
				atomic.AddUint64(&total, n)
			}(uint64(w))
		}
		wg.Wait()
		return fmt.Sprintf("%d %d", total, time.Since(t).Nanoseconds())
	}
	fail(fmt.Errorf("unknown command %q", cmd))
	return ""
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	var db *bolt.DB
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) == 0 {
			continue
		}
		var reply string
		switch fields[0] {
		case "open":
			if len(fields) != 3 {
				fail(fmt.Errorf("usage: open PATH nosync|sync"))
			}
			var err error
			if db, err = open(fields[1], fields[2]); err != nil {
				fail(err)
			}
			reply = "ok"
		case "close":
			if db != nil {
				if err := db.Close(); err != nil {
					fail(err)
				}
				db = nil
			}
			reply = "ok"
		default:
			if db == nil || len(fields) != 3 {
				fail(fmt.Errorf("%q: open a store first; commands take two numbers", in.Text()))
			}
			reply = run(db, fields[0], fields[1:])
		}
		fmt.Fprintln(out, reply)
		out.Flush()
	}
}
