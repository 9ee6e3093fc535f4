using GptSharp.Model;
using GptSharp.Tests.Checkpoints.TensorFlow;
using GptSharp.Pretrained;

namespace GptSharp.Benchmarks;

/// <summary>
/// Writes a full-size GPT-2 checkpoint in OpenAI's layout (TensorFlow bundle with OpenAI's tensor names and
/// shapes, <c>hparams.json</c>) filled with seeded random weights, so the loader's time and peak memory can be
/// measured for every size without downloading anything:
/// <c>dotnet run -c Release --project bench/GptSharp.Benchmarks -- gpt2-synthetic DIR gpt2-xl</c>, then e.g.
/// <c>/usr/bin/time -v gptsharp generate --model-dir DIR -n 2</c> (maximum resident set size).
/// </summary>
public static class SyntheticGpt2Checkpoint
{
    public static void Write(string directory, string size)
    {
        // The alias (gpt2-small, not 124M, which names the book's context-256 preset) gives OpenAI's config.
        var c = GptConfig.FromName(Gpt2Models.Find(size).Alias);
        int e = c.EmbeddingDim, h = c.HiddenDim;
        var random = new Random(123);
        // Shapes and how to make each tensor; the data is made as the writer reaches it, one tensor in memory at a time.
        var shapes = new Dictionary<string, long[]>();
        var makers = new Dictionary<string, Func<float[]>>();
        void Weights(string name, long[] shape) => Add(name, shape, () =>
        {
            var values = new float[shape.Aggregate(1L, (a, b) => a * b)];
            for (long i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() - 0.5) * 0.04f;
            return values;
        });
        void Fill(string name, int count, float value) => Add(name, [count], () => Enumerable.Repeat(value, count).ToArray());
        void Add(string name, long[] shape, Func<float[]> make)
        {
            shapes[name] = shape;
            makers[name] = make;
        }
        Weights("model/wte", [c.VocabSize, e]);
        Weights("model/wpe", [c.ContextLength, e]);
        Fill("model/ln_f/g", e, 1f);
        Fill("model/ln_f/b", e, 0f);
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"model/h{i}/";
            Weights(p + "attn/c_attn/w", [1, e, 3 * e]);
            Fill(p + "attn/c_attn/b", 3 * e, 0f);
            Weights(p + "attn/c_proj/w", [1, e, e]);
            Fill(p + "attn/c_proj/b", e, 0f);
            Weights(p + "mlp/c_fc/w", [1, e, h]);
            Fill(p + "mlp/c_fc/b", h, 0f);
            Weights(p + "mlp/c_proj/w", [1, h, e]);
            Fill(p + "mlp/c_proj/b", e, 0f);
            Fill(p + "ln_1/g", e, 1f);
            Fill(p + "ln_1/b", e, 0f);
            Fill(p + "ln_2/g", e, 1f);
            Fill(p + "ln_2/b", e, 0f);
        }
        Directory.CreateDirectory(directory);
        TfBundleWriter.Write(Path.Combine(directory, "model.ckpt"), shapes, name => makers[name]());
        File.WriteAllText(Path.Combine(directory, "hparams.json"),
            $"{{\"n_vocab\": {c.VocabSize}, \"n_ctx\": {c.ContextLength}, \"n_embd\": {e}, \"n_head\": {c.Heads}, \"n_layer\": {c.Layers}}}\n");
        long parameters = shapes.Values.Sum(shape => shape.Aggregate(1L, (a, b) => a * b));
        Console.WriteLine($"{directory}: {size}, {parameters:N0} parameters, {parameters * 4 / 1e9:F2} GB of float32");
    }
}
