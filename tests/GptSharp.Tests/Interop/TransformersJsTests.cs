using System.Diagnostics;
using System.Text.Json;
using GptSharp.Checkpoints;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tests.Checkpoints;
using GptSharp.Tokenization;
using GptSharp.Data;

namespace GptSharp.Tests.Interop;

/// <summary>
/// The exported ONNX folder in transformers.js (Node): its AutoTokenizer reads tokenizer.json and must give our ids, its
/// AutoModelForCausalLM runs onnx/model.onnx with its own KV-cache loop and must pick GptSharp's greedy tokens.
/// Needs Node and <c>npm install @huggingface/transformers</c> in the folder named by GPTSHARP_TRANSFORMERS_JS
/// (.ci/run sets it up); a visible skip otherwise.
/// </summary>
public class TransformersJsTests
{
    private const string Script = """
        import { createRequire } from 'node:module';
        import { pathToFileURL } from 'node:url';
        import path from 'node:path';
        const [moduleRoot, modelDir, prompt, maxNew] = process.argv.slice(2);
        const require = createRequire(path.join(moduleRoot, 'index.js'));
        const { AutoTokenizer, AutoModelForCausalLM, env } = await import(pathToFileURL(require.resolve('@huggingface/transformers')).href);
        env.allowRemoteModels = false;
        env.localModelPath = path.dirname(modelDir) + '/';
        const name = path.basename(modelDir);
        const tokenizer = await AutoTokenizer.from_pretrained(name);
        const model = await AutoModelForCausalLM.from_pretrained(name, { dtype: 'fp32' });
        const inputs = tokenizer(prompt);
        const output = await model.generate({ ...inputs, max_new_tokens: Number(maxNew), do_sample: false });
        console.log(JSON.stringify({ prompt: Array.from(inputs.input_ids.data, Number), ids: Array.from(output.data, Number) }));
        """;

    [SkippableFact]
    public void TransformersJsTokenizesAndGeneratesLikeGptSharp()
    {
        string? node = SystemTools.Find("node");
        Skip.If(node is null, "skipped: 'node' is not installed (apt-get install nodejs)");
        string? root = Environment.GetEnvironmentVariable("GPTSHARP_TRANSFORMERS_JS");
        Skip.If(root is null || !Directory.Exists(Path.Combine(root, "node_modules", "@huggingface", "transformers")),
            "skipped: set GPTSHARP_TRANSFORMERS_JS to a folder where `npm install @huggingface/transformers` ran (.ci/run does)");

        // GPT-2's vocabulary so the tokenizer's ids fit; small otherwise. Scaled weights give a greedy path that moves.
        var config = new GptConfig { VocabSize = 50257, ContextLength = 64, EmbeddingDim = 32, Heads = 2, Layers = 2, DropRate = 0f };
        using var model = CheckpointTestHelpers.RandomModel(config, seed: 11);
        foreach (var p in model.Parameters()) foreach (ref float w in p.Value.Span) w *= 8f;
        using var dir = new TempDir();
        string folder = Path.Combine(dir.Path, "tiny-gpt2");
        model.Export(folder, new ExportOptions(ModelFileFormat.Onnx));
        string script = dir.File("generate.mjs");
        File.WriteAllText(script, Script);

        const string prompt = "Every effort moves you";
        const int newTokens = 20;
        var start = new ProcessStartInfo(node!, [script, root!, folder, prompt, newTokens.ToString()]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        Assert.True(process.WaitForExit(120_000), "transformers.js did not finish in 2 minutes");
        Assert.True(process.ExitCode == 0, $"node exited with {process.ExitCode}: {stderr.Result}");
        using var json = JsonDocument.Parse(stdout.Trim().Split('\n')[^1]);
        var promptIds = json.RootElement.GetProperty("prompt").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var ids = json.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();

        var ours = Gpt2Tokenizer.Instance.Encode(prompt);
        Assert.Equal(ours, promptIds);
        var expected = BookGeneration.GenerateTextSimple(model, TokenBatch.FromSequence(ours), newTokens, config.ContextLength).Row(0).ToArray();
        // transformers.js stops after eos (50256); up to there the ids must be ours.
        int end = Array.IndexOf(expected, Gpt2Tokenizer.EndOfTextId, ours.Length) is int eos and >= 0 ? eos + 1 : expected.Length;
        Assert.Equal(expected[..end], ids);
        Assert.True(expected[ours.Length..].Distinct().Count() > 3, "degenerate greedy path");
    }
}
