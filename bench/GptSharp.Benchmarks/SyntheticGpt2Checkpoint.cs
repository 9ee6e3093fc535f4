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
        var c = GptConfig.FromPresetName(Gpt2Models.Find(size).Alias)!;
        int e = c.EmbeddingDim, h = c.HiddenDim;
        var random = new Random(123);
        float[] Weights(long count)
        {
            var values = new float[count];
            for (long i = 0; i < count; i++) values[i] = (float)(random.NextDouble() - 0.5) * 0.04f;
            return values;
        }
        float[] Fill(int count, float value) => Enumerable.Repeat(value, count).ToArray();
        var tensors = new Dictionary<string, (long[], float[])>
        {
            ["model/wte"] = ([c.VocabSize, e], Weights((long)c.VocabSize * e)),
            ["model/wpe"] = ([c.ContextLength, e], Weights((long)c.ContextLength * e)),
            ["model/ln_f/g"] = ([e], Fill(e, 1f)),
            ["model/ln_f/b"] = ([e], Fill(e, 0f)),
        };
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"model/h{i}/";
            tensors[p + "attn/c_attn/w"] = ([1, e, 3 * e], Weights(3L * e * e));
            tensors[p + "attn/c_attn/b"] = ([3 * e], Fill(3 * e, 0f));
            tensors[p + "attn/c_proj/w"] = ([1, e, e], Weights((long)e * e));
            tensors[p + "attn/c_proj/b"] = ([e], Fill(e, 0f));
            tensors[p + "mlp/c_fc/w"] = ([1, e, h], Weights((long)e * h));
            tensors[p + "mlp/c_fc/b"] = ([h], Fill(h, 0f));
            tensors[p + "mlp/c_proj/w"] = ([1, h, e], Weights((long)h * e));
            tensors[p + "mlp/c_proj/b"] = ([e], Fill(e, 0f));
            tensors[p + "ln_1/g"] = ([e], Fill(e, 1f));
            tensors[p + "ln_1/b"] = ([e], Fill(e, 0f));
            tensors[p + "ln_2/g"] = ([e], Fill(e, 1f));
            tensors[p + "ln_2/b"] = ([e], Fill(e, 0f));
        }
        Directory.CreateDirectory(directory);
        TfBundleWriter.Write(Path.Combine(directory, "model.ckpt"), tensors);
        File.WriteAllText(Path.Combine(directory, "hparams.json"),
            $"{{\"n_vocab\": {c.VocabSize}, \"n_ctx\": {c.ContextLength}, \"n_embd\": {e}, \"n_head\": {c.Heads}, \"n_layer\": {c.Layers}}}\n");
        long parameters = tensors.Values.Sum(t => (long)t.Item2.Length);
        Console.WriteLine($"{directory}: {size}, {parameters:N0} parameters, {parameters * 4 / 1e9:F2} GB of float32");
    }
}
