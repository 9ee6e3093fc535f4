using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.IO;
using GptSharp.Formats;
using GptSharp.Formats.SafeTensors;
using GptSharp.Formats.PyTorch;

namespace GptSharp.Checkpoints;

/// <summary>
/// The book's PyTorch files: <c>torch.save(model.state_dict(), "model.pth")</c> and
/// <c>torch.save({"model_state_dict": ..., "optimizer_state_dict": ...}, "model_and_optimizer.pth")</c>,
/// read into a <see cref="GptModel"/> and an <see cref="AdamW"/>, and written so that
/// <c>torch.load(path, weights_only=True)</c> and the book's <c>model.load_state_dict</c> accept them.
/// </summary>
internal static class PthModelFile
{
    /// <summary>
    /// Reads the model (and the optimizer, when the file has an <c>optimizer_state_dict</c>). The config is
    /// <paramref name="config"/>, else a config.json beside the file, else inferred from the shapes.
    /// </summary>
    public static (GptModel Model, AdamW? Optimizer) Load(string path, GptConfig? config = null)
    {
        using var file = PthFile.Open(path);
        var stateDict = file.StateDict();
        config ??= ModelFile.ConfigBeside(path) ?? StateDictLoader.InferConfig(stateDict);
        StateDictLoader.CheckConfigFitsFile(config, stateDict);
        var model = new GptModel(config);
        AdamW? optimizer = null;
        try
        {
            StateDictLoader.LoadInto(model, stateDict);
            var osd = file.OptimizerStateDict();
            if (osd is not null) optimizer = LoadOptimizer(file, osd, model);
            return (model, optimizer);
        }
        catch
        {
            optimizer?.Dispose();
            model.Dispose();
            throw;
        }
    }

    /// <summary>Reads just the model of a .pth file.</summary>
    public static GptModel LoadModel(string path, GptConfig? config = null)
    {
        var (model, optimizer) = Load(path, config);
        optimizer?.Dispose();
        return model;
    }

    /// <summary>
    /// Builds an <see cref="AdamW"/> over <paramref name="model"/>'s parameters from PyTorch's <c>optimizer.state_dict()</c>:
    /// hyper-parameters from <c>param_groups[0]</c>, and per parameter index i (the i-th <c>model.parameters()</c>)
    /// <c>exp_avg</c>, <c>exp_avg_sq</c> and <c>step</c> (a float tensor since torch 1.12).
    /// </summary>
    public static AdamW LoadOptimizer(PthFile file, PyDict stateDict, GptModel model)
    {
        string f = file.FilePath;
        var parameters = model.Parameters();
        if (!stateDict.TryGet("param_groups", out var groupsObj) || groupsObj is not List<object?> groups || groups.Count == 0)
            throw new InvalidDataException($"{f}: optimizer_state_dict has no param_groups list.");
        if (groups.Count != 1) throw new InvalidDataException($"{f}: optimizer has {groups.Count} param groups; only one (the book's) is supported.");
        if (groups[0] is not PyDict group) throw new InvalidDataException($"{f}: param_groups[0] is not a dict.");
        double lr = Number(group, "lr", f);
        double weightDecay = Number(group, "weight_decay", f);
        double eps = Number(group, "eps", f);
        if (!group.TryGet("betas", out var betasObj) || betasObj is not PyTuple { Count: 2 } betas)
            throw new InvalidDataException($"{f}: param_groups[0] has no (beta1, beta2) tuple.");
        if (group.TryGet("amsgrad", out var ams) && ams is true) throw new InvalidDataException($"{f}: amsgrad AdamW is not supported.");
        if (group.TryGet("maximize", out var max) && max is true) throw new InvalidDataException($"{f}: maximize=True is not supported.");
        if (!group.TryGet("params", out var paramsObj) || paramsObj is not List<object?> indices)
            throw new InvalidDataException($"{f}: param_groups[0] has no params list.");
        if (indices.Count != parameters.Count || indices.Select((x, i) => x is long l && l == i).Any(ok => !ok))
            throw new InvalidDataException($"{f}: optimizer covers {indices.Count} parameters, expected indices 0..{parameters.Count - 1} (the model's parameters in order).");

        var optimizer = new AdamW(parameters, (float)lr, (float)weightDecay, (float)ToDouble(betas[0], f), (float)ToDouble(betas[1], f), (float)eps);
        try
        {
            var state = stateDict.TryGet("state", out var s) && s is PyDict sd ? sd : throw new InvalidDataException($"{f}: optimizer_state_dict has no state dict.");
            long? step = null;
            foreach (var (key, value) in state.Items)
            {
                if (key is not long index || index < 0 || index >= parameters.Count)
                    throw new InvalidDataException($"{f}: optimizer state key {key} is not a parameter index 0..{parameters.Count - 1}.");
                var p = parameters[(int)index];
                if (value is not PyDict entry) throw new InvalidDataException($"{f}: optimizer state {index} is not a dict.");
                ReadMoment(file, entry, "exp_avg", index, p, optimizer.ExpAvg[index]);
                ReadMoment(file, entry, "exp_avg_sq", index, p, optimizer.ExpAvgSq[index]);
                long thisStep = ReadStep(file, entry, index);
                if (step is not null && step != thisStep)
                    throw new InvalidDataException($"{f}: parameters were stepped different numbers of times ({step} and {thisStep}); AdamW here keeps one step count.");
                step = thisStep;
            }
            if (state.Items.Count != 0 && state.Items.Count != parameters.Count)
                throw new InvalidDataException($"{f}: optimizer state covers {state.Items.Count} of {parameters.Count} parameters.");
            optimizer.StepCount = step ?? 0;
            return optimizer;
        }
        catch
        {
            optimizer.Dispose();
            throw;
        }
    }

    private static void ReadMoment(PthFile file, PyDict entry, string key, long index, Parameter p, Tensor destination)
    {
        if (!entry.TryGet(key, out var o) || o is not TorchTensor t)
            throw new InvalidDataException($"{file.FilePath}: optimizer state {index} ({p.Name}) has no '{key}' tensor.");
        StateDictLoader.CheckShape(file.FilePath, $"optimizer state {index} ({p.Name}) {key}", t.Shape, p.Value.ShapeArray);
        file.ReadInto(t, destination.Span, $"{key} of {p.Name}");
    }

    private static long ReadStep(PthFile file, PyDict entry, long index)
    {
        if (!entry.TryGet("step", out var o)) throw new InvalidDataException($"{file.FilePath}: optimizer state {index} has no 'step'.");
        double step;
        if (o is TorchTensor t && t.ElementCount == 1)
        {
            Span<float> one = stackalloc float[1];
            file.ReadInto(t, one, "step");
            step = one[0];
        }
        else step = ToDouble(o, file.FilePath); // a Python number before torch 1.12
        if (step < 0 || step != Math.Floor(step)) throw new InvalidDataException($"{file.FilePath}: optimizer state {index} has step {step}, not a whole number.");
        return (long)step;
    }

    private static double Number(PyDict d, string key, string file) =>
        d.TryGet(key, out var v) ? ToDouble(v, file) : throw new InvalidDataException($"{file}: param_groups[0] has no '{key}'.");

    private static double ToDouble(object? v, string file) => v switch
    {
        double d => d,
        long l => l,
        _ => throw new InvalidDataException($"{file}: expected a number in the optimizer state, got {PyDict.PyTypeName(v)}."),
    };

    /// <summary><c>torch.save(model.state_dict(), path)</c>: the book's keys, including the causal-mask buffers its <c>load_state_dict</c> expects.</summary>
    public static void SaveModel(GptModel model, string path)
    {
        using var masks = new MaskBuffers(model.Config);
        Write(path, ModelStateDict(model, masks));
    }

    /// <summary><c>torch.save({"model_state_dict": ..., "optimizer_state_dict": ...}, path)</c>, the book's checkpoint for resuming.</summary>
    public static void Save(GptModel model, AdamW optimizer, string path)
    {
        using var masks = new MaskBuffers(model.Config);
        var steps = new List<Tensor>();
        try
        {
            var root = new PyDict(ordered: false);
            root.Set("model_state_dict", ModelStateDict(model, masks));
            root.Set("optimizer_state_dict", OptimizerStateDict(optimizer, model, steps));
            Write(path, root);
        }
        finally
        {
            foreach (var t in steps) t.Dispose();
        }
    }

    private static PyDict ModelStateDict(GptModel model, MaskBuffers masks)
    {
        var dict = new PyDict(ordered: true);
        foreach (var p in model.Parameters())
        {
            // state_dict order puts a module's buffers before its children's parameters: att.mask precedes att.W_query.
            var m = System.Text.RegularExpressions.Regex.Match(p.Name, @"^trf_blocks\.(\d+)\.att\.W_query\.weight$");
            if (m.Success) dict.Set($"trf_blocks.{m.Groups[1].Value}.att.mask", masks.Mask);
            dict.Set(p.Name, p.Value);
        }
        return dict;
    }

    private static PyDict OptimizerStateDict(AdamW optimizer, GptModel model, List<Tensor> steps)
    {
        var parameters = model.Parameters();
        if (optimizer.Parameters.Count != parameters.Count || optimizer.Parameters.Where((p, i) => !ReferenceEquals(p, parameters[i])).Any())
            throw new ArgumentException("The optimizer must hold the model's parameters, in the model's order.");
        var state = new PyDict(ordered: false);
        if (optimizer.StepCount > 0) // PyTorch has no per-parameter state before the first step
        {
            for (int i = 0; i < parameters.Count; i++)
            {
                var step = Tensor.FromArray([optimizer.StepCount]);
                steps.Add(step);
                var entry = new PyDict(ordered: false);
                entry.Set("step", step);
                entry.Set("exp_avg", optimizer.ExpAvg[i]);
                entry.Set("exp_avg_sq", optimizer.ExpAvgSq[i]);
                state.Set((long)i, entry);
            }
        }
        var group = new PyDict(ordered: false);
        group.Set("lr", optimizer.LearningRate);
        group.Set("betas", new PyTuple([optimizer.Beta1, optimizer.Beta2]));
        group.Set("eps", optimizer.Eps);
        group.Set("weight_decay", optimizer.WeightDecay);
        group.Set("amsgrad", false);
        group.Set("foreach", null);
        group.Set("maximize", false);
        group.Set("capturable", false);
        group.Set("differentiable", false);
        group.Set("fused", null);
        group.Set("params", Enumerable.Range(0, parameters.Count).Select(i => (object?)(long)i).ToList());
        var dict = new PyDict(ordered: false);
        dict.Set("state", state);
        dict.Set("param_groups", new List<object?> { group });
        return dict;
    }

    /// <summary>Writes <paramref name="root"/> as a torch.save archive (folder <c>archive/</c>, one storage per tensor), atomically.</summary>
    internal static void Write(string path, object root)
    {
        const string prefix = "archive/";
        var keys = new Dictionary<Tensor, string>(ReferenceEqualityComparer.Instance);
        var order = new List<Tensor>();
        using var pickle = new MemoryStream();
        new Pickler(pickle, t =>
        {
            if (!keys.TryGetValue(t, out var key))
            {
                key = keys.Count.ToString(System.Globalization.CultureInfo.InvariantCulture);
                keys.Add(t, key);
                order.Add(t);
            }
            return key;
        }).Dump(root);
        AtomicFile.Write(path, stream =>
        {
            var zip = new TorchZipWriter(stream);
            zip.Add(prefix + "data.pkl", pickle.ToArray());
            zip.Add(prefix + "byteorder", "little"u8.ToArray());
            foreach (var t in order)
                zip.Add(prefix + "data/" + keys[t], t.Length * sizeof(float), Crc(t), s => SafeTensorsWriter.WriteFloats(s, t));
            zip.Add(prefix + "version", "3\n"u8.ToArray());
            zip.Finish();
        });
    }

    private static unsafe uint Crc(Tensor t)
    {
        byte* p = (byte*)t.Data;
        long total = t.Length * sizeof(float);
        uint crc = 0;
        const int chunk = 1 << 24;
        for (long done = 0; done < total; done += chunk)
            crc = Crc32.Append(crc, new ReadOnlySpan<byte>(p + done, (int)Math.Min(chunk, total - done)));
        return crc;
    }

    /// <summary>The book's <c>mask</c> buffer, <c>torch.triu(torch.ones(ctx, ctx), diagonal=1)</c>, shared by every block.</summary>
    private sealed class MaskBuffers : IDisposable
    {
        public MaskBuffers(GptConfig config)
        {
            int c = config.ContextLength;
            Mask = new Tensor(c, c);
            for (int i = 0; i < c; i++)
                for (int j = i + 1; j < c; j++) Mask[i, j] = 1f;
        }

        public Tensor Mask { get; }

        public void Dispose() => Mask.Dispose();
    }
}
